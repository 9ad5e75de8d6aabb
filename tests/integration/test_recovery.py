"""Recovery without losing or doubling a lead: a worker killed while a lead waits for
its retry, and a lead whose message vanished from the broker (the sweeper)."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from tests.stack import BEHAVIOURS, Stack, valid_payload

pytestmark = pytest.mark.integration


def _wait_until(
    predicate: Callable[[], bool], timeout: float = 20.0, what: str = "condition"
) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def test_a_worker_killed_while_a_lead_waits_for_its_retry_loses_nothing(stack: Stack) -> None:
    # Given myKaarma answers 429 with Retry-After: 3 s to the first attempt
    stack.fake.configure(behaviours={**BEHAVIOURS, "d-429": "retry-after:3"})
    worker = stack.start_worker("doomed")
    lead_id = stack.send(valid_payload(), partner="ratelimited")
    _wait_until(
        lambda: stack.redis.zscore(stack.store.keys.retry, lead_id) is not None,
        what="the lead to wait in the retry schedule",
    )
    # When the worker is SIGKILLed during the wait, and another one starts later
    worker.kill()
    record = stack.record(lead_id)
    assert record is not None and record["state"] == "delivering"
    stack.start_worker("successor")
    # Then the retry still happens, once, after the Retry-After
    record = stack.wait_for([lead_id], timeout=30)[lead_id]
    assert record["state"] == "delivered"
    assert [a["status"] for a in record["attempts"]] == [429, 200]
    stack.assert_delivered_once([lead_id])
    for w in list(stack.workers):
        w.stop()
    stack.workers.clear()


def test_the_sweeper_recovers_a_lead_whose_message_was_deleted(stack: Stack) -> None:
    # Given a worker that only ingests: the lead is received, its enrich message queued
    ingest_only = stack.start_worker("ingest-only", queues=["leads.ingest"])
    lead_id = stack.send(valid_payload(), partner="acme")
    stack.wait_for([lead_id], states=["received"])
    _wait_until(lambda: stack.redis.llen("leads.enrich") == 1, what="the enrich message")
    ingest_only.stop()
    # When the broker loses that message (as a Redis restart without persistence would)
    stack.redis.delete("leads.enrich")
    # Then a full worker's sweeper finds the stuck lead after its lease and finishes it
    stack.start_worker(
        "sweeper", env={"LEADPIPE_LEASE_SECONDS": "1", "LEADPIPE_HTTP_TIMEOUT_SECONDS": "0.4"}
    )
    record = stack.wait_for([lead_id], timeout=30)[lead_id]
    assert record["state"] == "delivered"
    stack.assert_delivered_once([lead_id])
