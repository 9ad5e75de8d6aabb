"""`leadpipe flower` against a real worker: basic auth on the UI and the API, our
worker listed, and no lead payload anywhere Flower shows tasks."""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest

from store.embedded import free_port
from tasks.request import MASKED_ARGS
from tests.integration.procs import Command, clean_env, running
from tests.stack import Stack, valid_payload

pytestmark = pytest.mark.integration

AUTH = "ops:flower-Pa55"


def get(url: str, auth: str | None = None) -> tuple[int, str]:
    """(status, body) of a GET; an HTTP error status is returned, not raised."""
    request = urllib.request.Request(url)
    if auth is not None:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def poll(what: str, fetch: Any, timeout: float = 30) -> Any:
    """Call `fetch` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fetch()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {timeout}s")


def wait_listening(flower: Command, base: str) -> None:
    def answered() -> bool:
        assert flower.process is not None
        if flower.process.poll() is not None:
            raise AssertionError(f"flower exited {flower.process.returncode}:\n{flower.stderr()}")
        try:
            return get(base + "/healthcheck")[0] == 200
        except OSError:
            return False

    poll("Flower answering", answered)


def sentinel_payload(mark: str) -> dict[str, Any]:
    return valid_payload(
        lead={
            "firstName": f"Firstname{mark}",
            "lastName": f"Lastname{mark}",
            "email": f"email-{mark}@example.com",
        }
    )


def test_flower_requires_basic_auth_lists_our_worker_and_never_shows_a_payload(
    stack: Stack, tmp_path: Path
) -> None:
    # Given a worker and `leadpipe flower` with basic auth, on a free loopback port
    worker = stack.start_worker("flower", concurrency=4)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = clean_env(**stack.env, LEADPIPE_FLOWER_BASIC_AUTH=AUTH)
    with running(["flower", "--port", str(port), "--json"], env, tmp_path) as flower:
        assert json.loads(flower.first_line()) == {"url": base, "basicAuth": True}
        wait_listening(flower, base)

        # Then the UI and the API refuse requests without (or with wrong) credentials
        assert get(base + "/")[0] == 401
        assert get(base + "/api/workers")[0] == 401
        assert get(base + "/api/workers", "ops:wrong")[0] == 401
        assert get(base + "/", AUTH)[0] == 200

        # And our worker is listed once Flower has found it
        def our_worker() -> bool:
            status, body = get(base + "/api/workers?refresh=1", AUTH)
            return status == 200 and any(
                name.startswith(worker.spec.name + "@") for name in json.loads(body)
            )

        poll("our worker in /api/workers", our_worker, timeout=40)

        # When leads carrying a sentinel are sent (until Flower has seen one: it turns
        # the workers' events on itself, a few seconds after it starts)
        mark = uuid.uuid4().hex[:12]
        sent: list[str] = []

        def flower_saw_an_ingest() -> dict[str, Any] | None:
            lead_id = stack.send(sentinel_payload(mark), partner="acme")
            sent.append(lead_id)
            stack.wait_for([lead_id])
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline:
                status, body = get(f"{base}/api/task/info/{lead_id}", AUTH)
                if status == 200 and json.loads(body).get("args"):
                    return dict(json.loads(body))
                time.sleep(0.2)
            return None

        info = poll("an ingest task in Flower", flower_saw_an_ingest, timeout=40)

        # Then Flower shows the ingest task with its arguments masked
        assert info["name"] == "leads.ingest"
        assert info["args"] == MASKED_ARGS
        assert "<masked>" in info["kwargs"]
        # And no page or API answer anywhere holds the sentinel
        seen = sent[-1]
        pages = [
            get(base + "/api/tasks", AUTH),
            get(base + "/tasks", AUTH),
            get(f"{base}/task/{seen}", AUTH),
            get(f"{base}/api/task/info/{seen}", AUTH),
        ]
        assert [status for status, _ in pages] == [200] * len(pages)
        assert seen in pages[0][1] and seen in pages[2][1]  # the task is shown...
        # (leads sent before Flower turned events on are unknown to it: 404)
        pages += [get(f"{base}/task/{lead_id}", AUTH) for lead_id in sent[:-1]]
        leaked = [body for _, body in pages if mark in body.lower()]
        assert not leaked, "a lead payload reached Flower"
        # And Flower does show task arguments (the later tasks carry the lead id only), so
        # it is the masking that keeps the payload out, not Flower leaving arguments out
        enrich = json.loads(get(base + "/api/tasks?taskname=leads.enrich", AUTH)[1])
        assert any(seen in str(task.get("args")) for task in enrich.values())
