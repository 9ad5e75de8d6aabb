"""`leadpipe flower` against a real worker: basic auth on the UI and the API, our
worker listed, and no lead payload anywhere Flower shows tasks."""

from __future__ import annotations

import base64
import json
import re
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from store.embedded import free_port
from tasks.queues import ALL_QUEUES, declare
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
        assert json.loads(flower.first_line()) == {
            "url": base,
            "basicAuth": True,
            "remoteControl": False,
        }
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
        assert info["kwargs"] == "{'partner': 'acme'}"  # a company, not personal data
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


# -- Flower tells the truth: failures, queue lengths, no customer data, no control ------


def post(url: str, auth: str) -> tuple[int, str]:
    """(status, body) of an empty POST with basic auth."""
    request = urllib.request.Request(url, data=b"", method="POST")
    request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def api(base: str, path: str) -> Any:
    status, body = get(base + path, AUTH)
    assert status == 200, (path, status, body[:300])
    return json.loads(body)


def sender_with_sent_events(stack: Stack) -> Celery:
    """An upstream app that publishes its own `task-sent` event with each message (a
    common setting; the event carries its own repr of the arguments)."""
    app = Celery("sender", broker=stack.redis_url)
    app.conf.update(broker_connection_retry_on_startup=True, task_send_sent_event=True)
    return app


def canary_payload(mark: str) -> tuple[dict[str, Any], list[str]]:
    """A lead carrying a canary name, email and VIN, and those canaries."""
    name, email, vin = f"Canary{mark}", f"canary-{mark}@example.com", f"9C{mark.upper()}XYZ"[:17]
    payload = valid_payload(
        lead={"firstName": name, "lastName": "Bird", "email": email},
        vehicle={"vin": vin, "state": "CA", "mileage": 1000},
    )
    return payload, [name, email, vin]


def every_page(base: str, task_ids: list[str]) -> dict[str, str]:
    """Every Flower page and API answer an operator could open, by path."""
    datatable = (
        "/tasks/datatable?draw=1&start=0&length=500&search%5Bvalue%5D="
        "&order%5B0%5D%5Bcolumn%5D=0&order%5B0%5D%5Bdir%5D=desc&columns%5B0%5D%5Bdata%5D=received"
    )
    paths = ["/", "/workers", "/tasks", datatable, "/broker", "/metrics", "/api/workers"]
    paths += ["/api/tasks", "/api/task/types", "/api/queues/length"]
    paths += [f"/task/{i}" for i in task_ids] + [f"/api/task/info/{i}" for i in task_ids]
    workers = json.loads(get(base + "/api/workers", AUTH)[1] or "{}")
    paths += [f"/worker/{name}" for name in workers]
    pages = {}
    for path in paths:
        status, body = get(base + path, AUTH)
        assert status == 200, (path, status, body[:300])
        pages[path] = body
    return pages


def dashboard_failed(html: str, worker_name: str) -> int:
    """The Failed cell of a worker's row in Flower's dashboard (its 5th column)."""
    row = re.search(rf'<tr id="{re.escape(worker_name)}[^"]*">(.*?)</tr>', html, re.S)
    assert row, f"no dashboard row for {worker_name}"
    cells = re.findall(r"<td>(.*?)</td>", row.group(1), re.S)
    return int(cells[4].strip().replace(",", "") or 0)


def assert_no_canary(pages: dict[str, str], canaries: list[str]) -> None:
    leaked = {
        path: canary
        for path, body in pages.items()
        for canary in canaries
        if canary.lower() in body.lower()
    }
    assert not leaked, f"customer data reached Flower: {leaked}"


def test_flower_shows_queue_lengths_and_no_canary_from_sent_events_or_refused_messages(
    stack: Stack, tmp_path: Path
) -> None:
    # Given `leadpipe flower` and no worker consuming the lead queues
    for worker in list(stack.workers):
        worker.stop(timeout=20)
        stack.workers.remove(worker)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = clean_env(**stack.env, LEADPIPE_FLOWER_BASIC_AUTH=AUTH)
    sender = sender_with_sent_events(stack)
    try:
        with running(["flower", "--port", str(port)], env, tmp_path) as flower:
            wait_listening(flower, base)

            # (Flower subscribes to events as it starts: send probes until it sees one)
            def flower_hears_the_sender() -> bool:
                probe = sender.send_task("leads.ingest", args=[{}], queue="leads.ingest")
                sent_probes.append(str(probe.id))
                return any(i in api(base, "/api/tasks") for i in sent_probes)

            sent_probes: list[str] = []
            poll("Flower hearing task-sent events", flower_hears_the_sender)

            # When a sender with task-sent events sends a lead carrying canaries as JSON
            # (with its own full repr of the arguments, as a sender may set for its
            # logs), and another one pickled (a message the worker will refuse) with
            # the email in a keyword too (Celery's own repr cuts nested values short)
            mark_json, mark_pickle = uuid.uuid4().hex[:12], uuid.uuid4().hex[:12]
            payload, canaries = canary_payload(mark_json)
            pickled_payload, pickled_canaries = canary_payload(mark_pickle)
            canaries += pickled_canaries
            as_json = str(
                sender.send_task(
                    "leads.ingest",
                    args=[payload],
                    kwargs={"partner": "acme"},
                    queue="leads.ingest",
                    argsrepr=repr([payload]),
                ).id
            )
            as_pickle = str(
                sender.send_task(
                    "leads.ingest",
                    args=[pickled_payload],
                    kwargs={"partner": "acme", "email": pickled_canaries[1]},
                    queue="leads.ingest",
                    serializer="pickle",
                ).id
            )
            ids = [as_json, as_pickle]
            tasks = poll(
                "both in Flower",
                lambda: (
                    (found := api(base, "/api/tasks")) and all(i in found for i in ids) and found
                ),
            )

            # Then Flower lists them (PENDING: no worker has them) with the payload masked
            # and the partner shown
            for lead_id in ids:
                assert tasks[lead_id]["state"] == "PENDING"
                assert tasks[lead_id]["args"] == MASKED_ARGS
            assert tasks[as_json]["kwargs"] == "{'partner': 'acme'}"
            assert tasks[as_pickle]["kwargs"] == "{'partner': 'acme', '<masked>': '<masked>'}"
            # And the queue lengths: every lead queue, the waiting messages counted
            lengths = {
                q["name"]: q["messages"] for q in api(base, "/api/queues/length")["active_queues"]
            }
            assert set(lengths) >= {"leads.ingest", "leads.enrich", "leads.deliver"}
            assert lengths["leads.ingest"] == len(sent_probes) + 2
            assert lengths["leads.enrich"] == lengths["leads.deliver"] == 0
            broker_status, broker_page = get(base + "/broker", AUTH)
            assert broker_status == 200 and "leads.ingest" in broker_page
            # And no canary anywhere
            assert_no_canary(every_page(base, ids), canaries)

            # When a worker starts and takes them: the JSON lead goes through, the pickle
            # is refused unread and dead-lettered under its id
            worker = stack.start_worker("flower-canary", concurrency=2)
            records = stack.wait_for(ids)
            assert [records[i]["state"] for i in ids] == ["delivered", "dead"]
            assert "x-python-serialize" in records[as_pickle]["error"]["message"]
            poll(
                "the ingest queue drained in Flower",
                lambda: (
                    {
                        q["name"]: q["messages"]
                        for q in api(base, "/api/queues/length")["active_queues"]
                    }["leads.ingest"]
                    == 0
                ),
            )
            # Then still no canary in any page, the worker's included
            known = list(api(base, "/api/tasks"))
            assert_no_canary(every_page(base, known), canaries)
            assert mark_json not in worker.log_text() and mark_pickle not in worker.log_text()
    finally:
        sender.close()


def test_a_dead_lead_is_a_failure_in_flower_naming_the_reason_not_the_data(
    stack: Stack, tmp_path: Path
) -> None:
    # Given a worker and `leadpipe flower`
    worker = stack.workers[0] if stack.workers else stack.start_worker("flower-dead")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = clean_env(**stack.env, LEADPIPE_FLOWER_BASIC_AUTH=AUTH)
    with running(["flower", "--port", str(port)], env, tmp_path) as flower:
        wait_listening(flower, base)
        mark = uuid.uuid4().hex[:12]

        # When invalid leads are sent (until Flower, which turns the worker's events on
        # a few seconds after it starts, has seen one fail)
        def a_failure_in_flower() -> dict[str, Any] | None:
            payload = valid_payload(
                lead={"firstName": f"N{mark}", "lastName": "X", "email": f"not-an-email-{mark}"}
            )
            lead_id = stack.send(payload, partner="acme")
            assert stack.wait_for([lead_id])[lead_id]["state"] == "dead"
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline:
                failed = api(base, "/api/tasks?state=FAILURE")
                for task_id, task in failed.items():
                    if lead_id in str(task.get("args")):
                        return {"id": task_id, "lead": lead_id, **task}
                time.sleep(0.2)
            return None

        task = poll("a FAILURE task for a dead lead", a_failure_in_flower, timeout=40)

        # Then the task that killed the lead is a FAILURE whose exception names the
        # reason and the field, never the value
        assert task["name"] == "leads.enrich"
        assert task["state"] == "FAILURE"
        assert task["exception"] == "LeadDead('invalid (lead.email)')"
        assert mark not in json.dumps(task)
        # And the record was written, the message acknowledged, nothing retried, and
        # the worker logged one line without a traceback
        record = stack.record(task["lead"])
        assert record is not None and record["state"] == "dead" and record["reason"] == "invalid"
        log = worker.log_text()
        assert log.count(f"leads.enrich[{task['id']}] raised expected: LeadDead") == 1
        assert "Traceback" not in log
        lengths = {
            q["name"]: q["messages"] for q in api(base, "/api/queues/length")["active_queues"]
        }
        assert lengths["leads.enrich"] == 0
        # And the ingest task reports what became of the lead as far as it knew
        ingest = api(base, f"/api/task/info/{task['lead']}")
        assert ingest["state"] == "SUCCESS"
        assert ingest["result"] == "'received; next leads.enrich'"
        # And the dashboard counts the failure in the worker's row
        assert dashboard_failed(get(base + "/", AUTH)[1], worker.spec.name) >= 1


def test_remote_control_is_refused_unless_allowed(stack: Stack, tmp_path: Path) -> None:
    # Given a worker and `leadpipe flower` with the default settings
    worker = stack.start_worker("flower-control", concurrency=1)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = clean_env(**stack.env, LEADPIPE_FLOWER_BASIC_AUTH=AUTH)
    with running(["flower", "--port", str(port)], env, tmp_path / "default") as flower:
        wait_listening(flower, base)
        name = poll(
            "our worker in Flower",
            lambda: next(
                (n for n in api(base, "/api/workers?refresh=1") if n.startswith(worker.spec.name)),
                None,
            ),
            timeout=40,
        )
        # When an operator asks Flower to shut it down, restart its pool or send a task
        refused = [
            post(f"{base}/api/worker/shutdown/{name}", AUTH),
            post(f"{base}/api/worker/pool/restart/{name}", AUTH),
            post(f"{base}/api/worker/pool/autoscale/{name}?min=1&max=2", AUTH),
            post(f"{base}/api/worker/queue/cancel-consumer/{name}?queue=leads.ingest", AUTH),
            post(f"{base}/api/task/async-apply/leads.ingest", AUTH),
        ]
        # Then every request is refused and the worker runs on
        assert [status for status, _ in refused] == [403] * len(refused)
        assert all("Read only" in body for _, body in refused)
        assert worker.process is not None and worker.process.poll() is None
        lead_id = stack.send(valid_payload(), partner="acme")
        assert stack.wait_for([lead_id])[lead_id]["state"] == "delivered"

    # When control is allowed explicitly, the same shutdown request is obeyed
    allowed = clean_env(
        **stack.env, LEADPIPE_FLOWER_BASIC_AUTH=AUTH, LEADPIPE_FLOWER_ALLOW_CONTROL="1"
    )
    with running(["flower", "--port", str(port), "--json"], allowed, tmp_path / "on") as flower:
        assert json.loads(flower.first_line())["remoteControl"] is True
        wait_listening(flower, base)
        poll(
            "our worker in Flower",
            lambda: any(n == name for n in api(base, "/api/workers?refresh=1")),
            timeout=40,
        )
        status, body = post(f"{base}/api/worker/shutdown/{name}", AUTH)
        assert status == 200, body
        assert worker.process is not None
        worker.process.wait(timeout=30)
        stack.workers.remove(worker)


RABBIT_API = "http://127.0.0.1:15672/api"
RABBIT_AUTH = "guest:guest"


def rabbit(method: str, path: str, body: dict[str, Any] | None = None) -> int:
    """One call to RabbitMQ's management API; its status (0 when it does not answer)."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(RABBIT_API + path, data=data, method=method)
    request.add_header("Authorization", "Basic " + base64.b64encode(RABBIT_AUTH.encode()).decode())
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


@pytest.fixture
def rabbit_vhost() -> Any:
    """A vhost of this test's own on the local RabbitMQ (its management API needed)."""
    if rabbit("GET", "/overview") != 200:
        pytest.skip("RabbitMQ's management API (rabbitmq_management) is not on 127.0.0.1:15672")
    vhost = f"leadpipe-flower-{uuid.uuid4().hex[:8]}"
    assert rabbit("PUT", f"/vhosts/{vhost}") in (201, 204)
    permissions = {"configure": ".*", "write": ".*", "read": ".*"}
    assert rabbit("PUT", f"/permissions/{vhost}/guest", permissions) in (201, 204)
    try:
        yield vhost
    finally:
        rabbit("DELETE", f"/vhosts/{vhost}")


def test_queue_lengths_on_rabbitmq_come_from_its_management_api(
    stack: Stack, tmp_path: Path, rabbit_vhost: str
) -> None:
    # Given the lead queues on RabbitMQ, 3 leads waiting in leads.ingest, and no worker
    broker = f"amqp://guest:guest@127.0.0.1:5672/{rabbit_vhost}"
    sender = Celery("sender", broker=broker)
    try:
        with sender.connection_for_write() as connection:
            for name in ALL_QUEUES:
                declare(name)(connection.default_channel).declare()
        for _ in range(3):
            sender.send_task("leads.ingest", args=[valid_payload()], queue="leads.ingest")
    finally:
        sender.close()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = clean_env(**stack.env, LEADPIPE_FLOWER_BASIC_AUTH=AUTH, LEADPIPE_BROKER_URL=broker)
    with running(["flower", "--port", str(port)], env, tmp_path) as flower:
        wait_listening(flower, base)

        # When an operator asks Flower for the queue lengths (RabbitMQ's figures lag
        # the queue by its stats interval, ~5 s)
        def lengths() -> dict[str, int] | None:
            found = api(base, "/api/queues/length")["active_queues"]
            # (a queue RabbitMQ has no stats for yet comes without "messages")
            counts = {q["name"]: q.get("messages") for q in found}
            settled = None not in counts.values() and counts.get("leads.ingest") == 3
            return counts if settled else None

        counts = poll("3 leads waiting in Flower's queue lengths", lengths, timeout=40)

    # Then every lead queue is listed with its count
    assert counts == {
        "leads.ingest": 3,
        "leads.enrich": 0,
        "leads.deliver": 0,
        "leads.notify": 0,
        "celery": 0,
    }
