"""Outcome notifications end to end (CONTRACT section 9): a bare Celery client, real
worker processes, a real Redis, the fake myKaarma, and a partner's receiver on
127.0.0.1 that verifies every signature with the `standardwebhooks` package and
answers 503 to the first try of each event."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from pydantic import SecretStr

from leadpipe.cli import main
from leadpipe.fake_partner import FakePartner, Received
from leadpipe.metrics import LeadpipeCollector
from pipeline.webhook_client import NotSent, Sent, WebhookSender
from pipeline.webhooks import WebhookTarget, encode_body
from store.notifications import NotificationStore
from tests.integration.conftest import running_stack
from tests.stack import ROUTING, Stack, valid_payload

pytestmark = pytest.mark.integration

SECRET = "whsec_" + base64.b64encode(b"partner-acme-secret-0123456789").decode()
LEAD_QUEUES = ("leads.ingest", "leads.enrich", "leads.deliver", "celery")
NOTIFY_QUEUES = ("leads.notify",)
#: Customer data of every lead sent here: none of it may appear in any event body.
CUSTOMER = {"firstName": "Wilhelmina", "lastName": "Zyskowski", "email": "w.zysk@example.com"}
VIN = "1HGCM82633A004352"
PLATE = "ZYX987"


class HangingEndpoint:
    """A TCP port that accepts connections and never answers (a partner that hangs).

    It counts the connections it holds, so a test can tell when every notification
    thread of a worker is stuck on it."""

    def __init__(self) -> None:
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self._stop = threading.Event()
        self._held: list[socket.socket] = []
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}/hooks"
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def held(self) -> int:
        return len(self._held)

    def _accept(self) -> None:
        self._listener.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
                self._held.append(conn)
            except OSError:
                continue

    def close(self) -> None:
        self._stop.set()
        self._listener.close()
        for conn in self._held:
            conn.close()


@pytest.fixture(scope="module")
def partner() -> Iterator[FakePartner]:
    with FakePartner(SECRET, fail_first=1) as receiver:
        yield receiver


@pytest.fixture(scope="module")
def hanging() -> Iterator[HangingEndpoint]:
    endpoint = HangingEndpoint()
    yield endpoint
    endpoint.close()


@pytest.fixture(scope="module")
def stack(
    redis_url: str,
    tmp_path_factory: pytest.TempPathFactory,
    partner: FakePartner,
    hanging: HangingEndpoint,
) -> Iterator[Stack]:
    routing = (
        ROUTING
        + f"""
[partners.hooked]
dealer_uuid = "d-ok"
webhook = {{ url = "{partner.url}", secret_env = "HOOKED_WEBHOOK_SECRET" }}

[partners.hanging]
dealer_uuid = "d-ok"
webhook = {{ url = "{hanging.url}", secret_env = "HOOKED_WEBHOOK_SECRET" }}
"""
    )
    with running_stack(
        redis_url,
        tmp_path_factory.mktemp("notify-stack"),
        routing,
        HOOKED_WEBHOOK_SECRET=SECRET,
    ) as s:
        yield s


def _lead(**overrides: Any) -> dict[str, Any]:
    payload = valid_payload(lead=dict(CUSTOMER))
    payload["vehicle"] = {"vin": VIN, "licensePlate": PLATE, "state": "CA", "mileage": 42000}
    payload.update(overrides)
    return payload


def _ensure_workers(stack: Stack) -> None:
    """A live lead worker and a live notification worker (earlier tests may kill some)."""
    alive = [w for w in stack.workers if w.process is not None and w.process.poll() is None]
    for queues in (LEAD_QUEUES, NOTIFY_QUEUES):
        if not any(tuple(w.spec.queues) == queues for w in alive):
            stack.start_worker(f"w-{queues[0]}", queues=queues)


def _accepted_for(partner: FakePartner, lead_id: str) -> list[Received]:
    return [r for r in partner.accepted() if r.body["data"]["leadId"] == lead_id]


def _wait_events(partner: FakePartner, lead_ids: list[str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(_accepted_for(partner, i) for i in lead_ids):
            return
        time.sleep(0.05)
    raise AssertionError(
        f"no accepted event for {[i for i in lead_ids if not _accepted_for(partner, i)]}"
    )


def test_delivered_invalid_and_duplicate_leads_each_send_one_verified_event(
    stack: Stack, partner: FakePartner
) -> None:
    # Given: lead and notification workers, and a partner whose endpoint fails each
    # event's first try with a 503
    _ensure_workers(stack)
    txn = f"T-{uuid.uuid4().hex[:8]}"
    # When: a valid lead, an invalid one and a duplicate of the first are sent
    delivered = stack.send(_lead(transactionId=txn), partner="hooked")
    stack.wait_for([delivered])
    invalid = stack.send(
        _lead(
            transactionId="T-bad", vehicle={"state": "CA", "mileage": 0, "licensePlate": "X" * 9}
        ),
        partner="hooked",
    )
    duplicate = stack.send(_lead(transactionId=txn), partner="hooked")
    records = stack.wait_for([invalid, duplicate])
    assert records[invalid]["state"] == "dead"
    assert records[duplicate]["state"] == "duplicate"
    _wait_events(partner, [delivered, invalid, duplicate])

    # Then: one accepted event per lead, of the right type and content
    events = {i: _accepted_for(partner, i) for i in (delivered, invalid, duplicate)}
    assert {i: len(e) for i, e in events.items()} == {delivered: 1, invalid: 1, duplicate: 1}
    d = events[delivered][0].body
    assert d["type"] == "lead.delivered"
    assert d["data"]["transactionId"] == txn
    assert d["data"]["partner"] == "hooked"
    assert d["data"]["dealerUuid"] == "d-ok"
    assert d["data"]["prospectUuid"] == stack.record(delivered)["prospectUuid"]  # type: ignore[index]
    assert d["data"]["isNewCreated"] is True
    x = events[invalid][0].body
    assert x["type"] == "lead.dead"
    assert x["data"]["transactionId"] == "T-bad"
    assert x["data"]["reason"] == "invalid"
    assert {e["field"] for e in x["data"]["errors"]} >= {"vehicle.mileage", "vehicle.licensePlate"}
    u = events[duplicate][0].body
    assert u["type"] == "lead.duplicate"
    assert u["data"]["duplicateOf"] == delivered
    assert u["data"]["transactionId"] == txn

    # And: each event was tried twice under one webhook-id, every try verified
    for lead_id, [accepted] in events.items():
        tries = [r for r in partner.received if r.webhook_id == accepted.webhook_id]
        assert [r.answered for r in tries] == [503, 204], lead_id
        assert all(r.verified for r in tries)
        assert tries[0].raw == tries[1].raw

    # And: no customer data in any body the partner received
    for received in partner.received:
        text = received.raw.decode()
        for secret in (*CUSTOMER.values(), VIN, PLATE, "X" * 9):
            assert secret not in text

    # And: `leadpipe notifications` material shows each as sent after 2 attempts
    store = NotificationStore(stack.redis)
    for lead_id in (delivered, invalid, duplicate):
        [view] = store.of_lead(lead_id)
        assert (view["state"], view["attempts"], view["lastStatus"]) == ("sent", 2, 204)


def test_a_partner_endpoint_that_hangs_never_delays_lead_delivery(
    stack: Stack, hanging: HangingEndpoint
) -> None:
    # Given: a notification worker with 2 threads and a 60 s HTTP timeout, both threads
    # stuck on a partner endpoint that accepts connections and never answers
    _ensure_workers(stack)
    for worker in [w for w in stack.workers if tuple(w.spec.queues) == NOTIFY_QUEUES]:
        worker.kill()
        stack.workers.remove(worker)
    stuck = stack.start_worker(
        "notify-hung",
        queues=NOTIFY_QUEUES,
        concurrency=2,
        env={"LEADPIPE_HTTP_TIMEOUT_SECONDS": "60", "LEADPIPE_LEASE_SECONDS": "130"},
    )
    held_before = hanging.held
    first = []
    for thread in (1, 2):  # one lead at a time: a partner's due events go out as one batch
        first.append(stack.send(_lead(), partner="hanging"))
        stack.wait_for(first)
        deadline = time.monotonic() + 30
        while hanging.held < held_before + thread:
            assert time.monotonic() < deadline, f"notification thread {thread} never connected"
            time.sleep(0.05)
    # When: more leads for that partner arrive while both threads hang
    later = [stack.send(_lead(), partner="hanging") for _ in range(30)]
    records = stack.wait_for(later, timeout=30)
    # Then: every one is delivered, well inside the 60 s the notification threads wait
    assert {r["state"] for r in records.values()} == {"delivered"}
    # And: the notification threads were stuck the whole time (no further connection)
    assert hanging.held == held_before + 2
    # And: each lead has its notification, waiting (none sent, none lost)
    store = NotificationStore(stack.redis)
    views = [store.of_lead(i) for i in first + later]
    assert all(len(v) == 1 and v[0]["type"] == "lead.delivered" for v in views)
    assert {v[0]["state"] for v in views} <= {"pending", "failed"}
    # The stuck threads would hold a graceful stop for a minute; the events are durable.
    stuck.kill()
    stack.workers.remove(stuck)


def test_sigkill_right_after_delivery_still_yields_the_event(
    stack: Stack, partner: FakePartner
) -> None:
    # Given: lead workers only (no notification worker yet)
    for worker in stack.workers:
        worker.stop(timeout=20)
    stack.workers.clear()
    leads = stack.start_worker("leads-2", queues=LEAD_QUEUES)
    lead_id = stack.send(_lead(), partner="hooked")
    # When: the worker is SIGKILLed the moment the lead is delivered
    stack.wait_for([lead_id], timeout=30)
    leads.kill()
    assert stack.record(lead_id)["state"] == "delivered"  # type: ignore[index]
    # Then: a notification worker started afterwards sends its event
    stack.start_worker("notify-2", queues=NOTIFY_QUEUES)
    _wait_events(partner, [lead_id])
    [accepted] = _accepted_for(partner, lead_id)
    assert accepted.body["type"] == "lead.delivered"
    assert json.loads(accepted.raw)["data"]["leadId"] == lead_id


def _cli(stack: Stack, *args: str) -> Result:
    env: dict[str, str | None] = {**stack.env, "LEADPIPE_BROKER_URL": None}
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def test_notifications_and_stats_commands_show_each_event(
    stack: Stack, partner: FakePartner
) -> None:
    # Given: a delivered lead whose event was sent (after one 503)
    _ensure_workers(stack)
    lead_id = stack.send(_lead(), partner="hooked")
    stack.wait_for([lead_id])
    _wait_events(partner, [lead_id])
    # When: an operator asks
    result = _cli(stack, "notifications", lead_id, "--json")
    # Then: one event, sent, two attempts, the last answered 204
    assert result.exit_code == 0, result.output
    [view] = json.loads(result.output)
    assert (view["type"], view["state"], view["attempts"], view["lastStatus"]) == (
        "lead.delivered",
        "sent",
        2,
        204,
    )
    assert [a["status"] for a in view["attemptLog"]] == [503, 204]
    plain = _cli(stack, "notifications", lead_id)
    assert plain.exit_code == 0 and "lead.delivered" in plain.output and "sent" in plain.output
    # And: a lead of a partner without a webhook has none; an unknown lead is exit 1
    other = stack.send(_lead(), partner="acme")
    stack.wait_for([other])
    none = _cli(stack, "notifications", other)
    assert none.exit_code == 0 and "no webhook" in none.output
    assert _cli(stack, "notifications", other, "--json").output.strip() == "[]"
    assert _cli(stack, "notifications", f"nope-{uuid.uuid4()}").exit_code == 1
    # And: stats count notifications by state
    stats = json.loads(_cli(stack, "stats", "--json").output)
    assert set(stats["notifications"]) == {"pending", "sent", "failed"}
    assert stats["notifications"]["sent"] >= 1
    assert "leads.notify" in stats["queues"]
    # And: so does the metrics exporter
    families = {f.name: f for f in LeadpipeCollector(stack.store).collect()}
    sent = [s for s in families["leadpipe_notifications"].samples if s.labels["state"] == "sent"]
    assert sent[0].value == stats["notifications"]["sent"]


def test_fake_partner_command_verifies_and_prints_each_post(tmp_path: Path) -> None:
    # Given: `leadpipe fake-partner` on a free port, its secret in the environment
    env = {**os.environ, "PARTNER_SECRET": SECRET}
    proc = subprocess.Popen(
        [sys.executable, "-c", "from leadpipe.cli import main; main()", "fake-partner",
         "--port", "0", "--secret-env", "PARTNER_SECRET", "--json"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        url = json.loads(proc.stdout.readline())["url"]
        # When: one signed event is POSTed to it, and one signed with another key
        sender = WebhookSender(timeout=2)
        body = encode_body({"type": "lead.dead", "timestamp": "t", "data": {"leadId": "L-1"}})
        good = sender.send(
            WebhookTarget(url=url, secret_env="S", secret=SecretStr(SECRET)),
            msg_id="msg_a",
            body=body,
        )
        other = "whsec_" + base64.b64encode(b"another-secret-0123456789abcdef").decode()
        bad = sender.send(
            WebhookTarget(url=url, secret_env="S", secret=SecretStr(other)),
            msg_id="msg_b",
            body=body,
        )
        sender.close()
        # Then: the first is accepted and printed verified, the second refused
        assert good == Sent(204)
        assert isinstance(bad, NotSent) and bad.status == 401
        first, second = json.loads(proc.stdout.readline()), json.loads(proc.stdout.readline())
        assert (first["webhookId"], first["verified"], first["answered"]) == ("msg_a", True, 204)
        assert (second["webhookId"], second["verified"]) == ("msg_b", False)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert proc.returncode == 0


def test_fake_partner_refuses_a_secret_not_in_whsec_form() -> None:
    result = CliRunner().invoke(
        main, ["fake-partner", "--secret-env", "BAD_SECRET"], env={"BAD_SECRET": "hunter2"}
    )
    assert result.exit_code == 2
    assert "BAD_SECRET" in result.output and "whsec_" in result.output
    assert "hunter2" not in result.output
