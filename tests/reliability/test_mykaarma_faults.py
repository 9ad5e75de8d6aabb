"""myKaarma failing in every way it can (issue 6, cases 4 and 5): down (503, then not
even accepting connections) and back; 429 with Retry-After; answers slower than the
HTTP timeout; and the ambiguous case, where myKaarma stores the lead and the
connection drops before its answer."""

from __future__ import annotations

from collections import Counter
from itertools import pairwise
from typing import Any

import pytest

from leadpipe.runner import WorkerProcess
from pipeline.backoff import backoff_ceiling
from tests.reliability.conftest import ReliabilityStack, StackFactory, seconds, wait_until
from tests.stack import BEHAVIOURS, valid_payload

pytestmark = pytest.mark.reliability

BASE, CAP = 0.1, 0.8  # LEADPIPE_RETRY_BASE_SECONDS, LEADPIPE_RETRY_MAX_DELAY_SECONDS
MAX_ATTEMPTS = 40
HTTP_TIMEOUT = 1.0
#: `at` is kept to the millisecond: two truncations.
CLOCK_TOLERANCE = 0.002


@pytest.fixture(scope="module")
def mk(module_stacks: StackFactory) -> tuple[ReliabilityStack, list[WorkerProcess]]:
    stack = module_stacks(
        LEADPIPE_RETRY_MAX_ATTEMPTS=str(MAX_ATTEMPTS),
        LEADPIPE_RETRY_BASE_SECONDS=str(BASE),
        LEADPIPE_RETRY_MAX_DELAY_SECONDS=str(CAP),
        LEADPIPE_HTTP_TIMEOUT_SECONDS=str(HTTP_TIMEOUT),
        LEADPIPE_LEASE_SECONDS="3",
    )
    return stack, stack.start_host("mk")


def _attempt_counts(stack: ReliabilityStack, ids: list[str]) -> dict[str, int]:
    pipe = stack.redis.pipeline(transaction=False)
    for lead_id in ids:
        pipe.hget(stack.store.keys.lead(lead_id), "attemptCount")
    return {i: int(n or 0) for i, n in zip(ids, pipe.execute(), strict=True)}


def _attempts(stack: ReliabilityStack, lead_id: str) -> list[dict[str, Any]]:
    record = stack.record(lead_id)
    assert record is not None
    return list(record["attempts"])


def _check_policy(attempts: list[dict[str, Any]]) -> float:
    """Each failed attempt's delay is within the policy, and the next attempt came no
    sooner than it; returns the smallest slack (gap minus delay) seen."""
    slack = float("inf")
    for n, (this, after) in enumerate(pairwise(attempts), start=1):
        assert this["attempt"] == n
        delay = this["delaySeconds"]
        limit = max(backoff_ceiling(n, base=BASE, cap=CAP), this.get("retryAfter") or 0)
        assert 0 <= delay <= limit + 0.0005, (n, delay, limit)  # delaySeconds: 3 decimals
        gap = seconds(after["at"]) - seconds(this["at"])
        assert gap >= delay - CLOCK_TOLERANCE, (n, gap, delay)
        slack = min(slack, gap - delay)
    return slack


def test_mykaarma_down_then_back_everything_is_delivered_on_the_backoff_policy(
    mk: tuple[ReliabilityStack, list[WorkerProcess]],
) -> None:
    stack, _host = mk
    fake = stack.fake
    # Given myKaarma answering 503 to everything
    fake.configure(behaviours={**BEHAVIOURS, "d-ok": "status:503"})
    ids = [stack.send(valid_payload(), partner="acme") for _ in range(40)]
    wait_until(
        lambda: min(_attempt_counts(stack, ids).values()) >= 2,
        timeout=30,
        what="two 503s for every lead",
    )
    # When it goes away altogether (connections refused) for a while ...
    fake.stop()
    at_stop = _attempt_counts(stack, ids)
    wait_until(
        lambda: all(n > at_stop[i] for i, n in _attempt_counts(stack, ids).items()),
        timeout=30,
        what="a refused connection for every lead",
    )
    # ... and comes back on the same port
    fake.configure(behaviours=dict(BEHAVIOURS))
    fake.start()

    # Then every lead is delivered once, none dead
    ledger = stack.ledger(ids, timeout=60)
    assert ledger.count("delivered") == len(ids)
    # ... and every retry followed the policy: delay within the backoff ceiling, the
    # next attempt no sooner than the delay
    kinds: Counter[str] = Counter()
    slack = float("inf")
    for lead_id in ids:
        attempts = _attempts(stack, lead_id)
        assert attempts[-1]["status"] == 200
        for attempt in attempts[:-1]:
            if attempt["status"] == 503:
                kinds["503"] += 1
            else:
                assert attempt["status"] is None
                assert attempt["error"].startswith("connection error"), attempt
                kinds["refused"] += 1
        slack = min(slack, _check_policy(attempts))
    assert kinds["503"] >= 2 * len(ids) and kinds["refused"] >= len(ids)
    print(
        f"\nmyKaarma down: {kinds['503']} x 503, {kinds['refused']} x connection refused, "
        f"then {len(ids)} x 200; every delay <= min({CAP:g}, {BASE:g}*2^(n-1)); smallest "
        f"gap-minus-delay {slack * 1000:.0f} ms; {ledger.summary()}"
    )


def test_429_retry_after_is_honoured_even_above_the_backoff_cap(
    mk: tuple[ReliabilityStack, list[WorkerProcess]],
) -> None:
    stack, _host = mk
    retry_after = 1.5  # above LEADPIPE_RETRY_MAX_DELAY_SECONDS
    stack.fake.configure(behaviours={**BEHAVIOURS, "d-429": f"retry-after:{retry_after}"})
    ids = [stack.send(valid_payload(), partner="ratelimited") for _ in range(10)]
    ledger = stack.ledger(ids, timeout=30)
    gaps = []
    for lead_id in ids:
        first, second = _attempts(stack, lead_id)
        assert (first["status"], second["status"]) == (429, 200)
        assert first["retryAfter"] == retry_after
        assert first["delaySeconds"] >= retry_after
        _check_policy([first, second])
        gaps.append(seconds(second["at"]) - seconds(first["at"]))
    assert min(gaps) >= retry_after - CLOCK_TOLERANCE
    print(
        f"\n429: Retry-After {retry_after}s (cap {CAP:g}s) honoured, second attempts "
        f"{min(gaps):.2f}-{max(gaps):.2f}s after the first; {ledger.summary()}"
    )


def _fake_records(stack: ReliabilityStack, lead_id: str) -> list[dict[str, Any]]:
    return [r for r in stack.fake.requests if lead_id in (r["leadId"], r["idempotencyKey"])]


def test_answers_slower_than_the_http_timeout_are_retried(
    mk: tuple[ReliabilityStack, list[WorkerProcess]],
) -> None:
    stack, _host = mk
    # Given a dealer whose answers take 2.5 s, against a 1 s timeout
    stack.fake.configure(behaviours={**BEHAVIOURS, "d-timeout": "slow:2500"})
    ids = [stack.send(valid_payload(), partner="timeout") for _ in range(5)]
    wait_until(
        lambda: min(_attempt_counts(stack, ids).values()) >= 2,
        timeout=30,
        what="two timed-out attempts per lead",
    )
    # When myKaarma is fast again
    stack.fake.configure(behaviours={**BEHAVIOURS, "d-timeout": "ok"})
    stack.wait_for(ids, timeout=30)
    # (the slow requests still finish at the fake, unread: wait for them to be recorded)
    wait_until(
        lambda: all(len(_fake_records(stack, i)) == len(_attempts(stack, i)) for i in ids),
        timeout=10,
        what="every POST recorded by the fake",
    )
    # Then each lead is delivered; the timed-out POSTs were stored by myKaarma after
    # we stopped waiting (ambiguous, like a dropped answer), yet created only once
    ledger = stack.ledger(ids, ambiguous=ids)
    timeouts = 0
    for lead_id in ids:
        attempts = _attempts(stack, lead_id)
        assert attempts[-1]["status"] == 200
        for attempt in attempts[:-1]:
            assert attempt["error"].startswith("timeout"), attempt
            assert HTTP_TIMEOUT * 0.9 <= attempt["durationMs"] / 1000 < HTTP_TIMEOUT * 2
            timeouts += 1
        _check_policy(attempts)
        keys = {(r["leadId"], r["idempotencyKey"]) for r in _fake_records(stack, lead_id)}
        assert keys == {(lead_id, lead_id)}
    assert ledger.count("delivered") == len(ids)
    print(
        f"\nslow myKaarma: {timeouts} timed-out attempts, then 200; "
        f"{sum(ledger.stored[i] for i in ids)} stores at the fake for {len(ids)} leads, "
        f"{sum(ledger.created[i] for i in ids)} created; {ledger.summary()}"
    )


def test_drop_after_store_is_posted_again_under_the_same_key_and_created_once(
    mk: tuple[ReliabilityStack, list[WorkerProcess]],
) -> None:
    stack, _host = mk
    stack.fake.configure(behaviours=dict(BEHAVIOURS))  # d-drop: drop-after-store
    # Given a dealer that stores the lead, then drops the connection without answering
    ids = [stack.send(valid_payload(), partner="dropper") for _ in range(10)]
    # Then leadpipe cannot know it was stored, so it posts again, with the same leadId
    # and Idempotency-Key; myKaarma answers 200 "not new": delivered, created once
    ledger = stack.ledger(ids, ambiguous=ids, timeout=30)
    for lead_id in ids:
        first, second = _fake_records(stack, lead_id)
        assert (first["status"], first["stored"], first["created"]) == ("dropped", True, True)
        assert (second["status"], second["stored"], second["created"]) == (200, True, False)
        for rec in (first, second):
            assert rec["leadId"] == rec["idempotencyKey"] == lead_id
        record = stack.record(lead_id)
        assert record is not None
        assert (record["state"], record["isNewCreated"]) == ("delivered", False)
        statuses = [a["status"] for a in record["attempts"]]
        assert statuses == [None, 200]
        assert record["attempts"][0]["error"].startswith("connection error")
    assert ledger.stored_twice == set(ids)
    print(
        f"\ndrop-after-store: {len(ids)} leads, {sum(ledger.posts.values())} POSTs, "
        f"{sum(ledger.stored.values())} stored, {sum(ledger.created.values())} created; "
        "each second POST with the same leadId and Idempotency-Key"
    )
