"""The dealer breaker's rules (pipeline/breaker.py): table-driven cases and properties."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.breaker import (
    CLOSED,
    Answer,
    Breaker,
    BreakerPolicy,
    BreakerReason,
    BreakerState,
    Gate,
    after_answer,
    credentials_work,
    elect,
    gate,
    pause,
    resume,
    unauthorized_elsewhere,
)

POLICY = BreakerPolicy(failures=3, cooldown_seconds=10.0, max_cooldown_seconds=35.0)
LEASE = 5.0


def fail(b: Breaker, times: int, *, now: float = 100.0, lead: str = "x") -> Breaker:
    for _ in range(times):
        b = after_answer(b, Answer.TRANSIENT, lead_id=lead, now=now, policy=POLICY)
    return b


def test_transient_failures_open_after_the_threshold() -> None:
    # Given a closed breaker, when two transient failures arrive it stays closed
    b = fail(CLOSED, 2)
    assert b.state == BreakerState.CLOSED and b.failures == 2
    # When the third arrives it opens, with the first cooldown
    b = fail(b, 1, now=100.0)
    assert b.state == BreakerState.OPEN
    assert b.reason == BreakerReason.FAILURES
    assert b.opened_at == 100.0 and b.next_probe_at == 110.0 and b.cooldown == 10.0


def test_a_delivery_resets_the_count() -> None:
    b = fail(CLOSED, 2)
    b = after_answer(b, Answer.DELIVERED, lead_id="x", now=1.0, policy=POLICY)
    assert b == CLOSED
    assert fail(b, 2).state == BreakerState.CLOSED


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (Answer.FORBIDDEN, BreakerReason.FORBIDDEN),
        (Answer.UNAUTHORIZED, BreakerReason.UNAUTHORIZED),
    ],
)
def test_403_and_401_open_at_once(answer: Answer, reason: BreakerReason) -> None:
    b = after_answer(CLOSED, answer, lead_id="x", now=50.0, policy=POLICY)
    assert (b.state, b.reason, b.next_probe_at) == (BreakerState.OPEN, reason, 60.0)


def test_rejected_is_the_leads_fault_and_leaves_the_breaker() -> None:
    b = fail(CLOSED, 2)
    assert after_answer(b, Answer.REJECTED, lead_id="x", now=1.0, policy=POLICY) == b


def test_open_holds_until_the_cooldown_then_elects_one_probe() -> None:
    b = fail(CLOSED, 3, now=100.0)
    decision, same = gate(b, lead_id="a", now=109.9, lease=LEASE)
    assert decision == Gate.HOLD and same == b
    decision, b = gate(b, lead_id="a", now=110.0, lease=LEASE)
    assert decision == Gate.PROBE
    assert (b.state, b.probe, b.probe_until) == (BreakerState.HALF_OPEN, "a", 115.0)
    # Another lead is held while the probe is in flight
    assert gate(b, lead_id="b", now=111.0, lease=LEASE)[0] == Gate.HOLD
    # The probe itself may pass again (a redelivered message)
    assert gate(b, lead_id="a", now=111.0, lease=LEASE)[0] == Gate.PROBE
    # A probe lost past its lease is replaced
    decision, b2 = gate(b, lead_id="b", now=115.0, lease=LEASE)
    assert decision == Gate.PROBE and b2.probe == "b"


def test_probe_success_closes_and_failure_doubles_the_wait_up_to_the_cap() -> None:
    b = elect(fail(CLOSED, 3, now=100.0), lead_id="a", now=110.0, lease=LEASE)
    assert after_answer(b, Answer.DELIVERED, lead_id="a", now=111.0, policy=POLICY) == CLOSED
    waits = []
    now = 110.0
    for _ in range(4):
        b = after_answer(b, Answer.TRANSIENT, lead_id="a", now=now, policy=POLICY)
        assert b.state == BreakerState.OPEN and b.opened_at == 100.0
        waits.append(b.cooldown)
        now = b.next_probe_at or now
        b = elect(b, lead_id="a", now=now, lease=LEASE)
    assert waits == [20.0, 35.0, 35.0, 35.0]


def test_a_failure_of_a_lead_that_is_not_the_probe_does_not_reschedule() -> None:
    b = elect(fail(CLOSED, 3, now=100.0), lead_id="a", now=110.0, lease=LEASE)
    after = after_answer(b, Answer.TRANSIENT, lead_id="other", now=112.0, policy=POLICY)
    assert (after.state, after.probe, after.failures) == (BreakerState.HALF_OPEN, "a", 4)


def test_rejected_probe_closes_the_breaker() -> None:
    b = elect(fail(CLOSED, 3), lead_id="a", now=110.0, lease=LEASE)
    assert after_answer(b, Answer.REJECTED, lead_id="a", now=111.0, policy=POLICY) == CLOSED


def test_pause_is_idempotent_and_survives_answers() -> None:
    b = pause(fail(CLOSED, 1), now=10.0, note="dealer migrating")
    assert (b.state, b.reason, b.opened_at, b.note) == (
        BreakerState.PAUSED,
        BreakerReason.OPERATOR,
        10.0,
        "dealer migrating",
    )
    assert pause(b, now=20.0) == b
    assert pause(b, now=20.0, note="new").note == "new"
    for answer in Answer:
        after = after_answer(b, answer, lead_id="x", now=30.0, policy=POLICY)
        assert after.state == BreakerState.PAUSED
    assert gate(b, lead_id="x", now=1e9, lease=LEASE)[0] == Gate.HOLD
    assert resume(b) == CLOSED


def test_401_elsewhere_opens_every_breaker_but_a_paused_one() -> None:
    opened = unauthorized_elsewhere(CLOSED, now=5.0, policy=POLICY)
    assert (opened.state, opened.reason) == (BreakerState.OPEN, BreakerReason.UNAUTHORIZED)
    failing = fail(CLOSED, 3, now=1.0)
    relabelled = unauthorized_elsewhere(failing, now=5.0, policy=POLICY)
    assert relabelled.reason == BreakerReason.UNAUTHORIZED
    assert relabelled.next_probe_at == failing.next_probe_at
    paused = pause(CLOSED, now=1.0)
    assert unauthorized_elsewhere(paused, now=5.0, policy=POLICY) == paused


def test_working_credentials_make_unauthorized_dealers_probe_now() -> None:
    b = unauthorized_elsewhere(CLOSED, now=5.0, policy=POLICY)
    assert credentials_work(b, now=7.0).next_probe_at == 7.0
    failing = fail(CLOSED, 3, now=1.0)
    assert credentials_work(failing, now=7.0) == failing


def test_policy_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="failures"):
        BreakerPolicy(failures=0, cooldown_seconds=1, max_cooldown_seconds=1)
    with pytest.raises(ValueError, match="positive"):
        BreakerPolicy(failures=1, cooldown_seconds=0, max_cooldown_seconds=1)
    assert BreakerPolicy(1, 30.0, 10.0).first_cooldown == 10.0


# -- properties -------------------------------------------------------------------

answers = st.sampled_from(list(Answer))
events = st.lists(
    st.tuples(
        st.sampled_from(["answer", "gate", "pause", "resume"]),
        answers,
        st.sampled_from(["a", "b", "c"]),
        st.floats(min_value=0, max_value=50),
    ),
    max_size=60,
)


def run(sequence: list[tuple[str, Answer, str, float]]) -> list[Breaker]:
    b, now, seen = CLOSED, 1000.0, []
    for kind, answer, lead, step in sequence:
        now += step
        if kind == "answer":
            b = after_answer(b, answer, lead_id=lead, now=now, policy=POLICY)
        elif kind == "gate":
            b = gate(b, lead_id=lead, now=now, lease=LEASE)[1]
        elif kind == "pause":
            b = pause(b, now=now)
        else:
            b = resume(b)
        seen.append(b)
    return seen


@given(events)
def test_invariants_hold_for_any_sequence(sequence: list[tuple[str, Answer, str, float]]) -> None:
    for b in run(sequence):
        # A cooldown never exceeds the cap, and an open breaker always knows its probe time
        assert 0 <= b.cooldown <= POLICY.max_cooldown_seconds
        if b.state == BreakerState.OPEN:
            assert b.next_probe_at is not None and b.reason is not None
            assert b.opened_at is not None and b.probe is None
        if b.state == BreakerState.HALF_OPEN:
            assert b.probe is not None and b.probe_until is not None
        if b.state == BreakerState.CLOSED:
            assert b.reason is None and b.failures < POLICY.failures
        if b.state == BreakerState.PAUSED:
            assert b.reason == BreakerReason.OPERATOR


@given(events)
def test_only_an_operator_leaves_a_pause(sequence: list[tuple[str, Answer, str, float]]) -> None:
    paused = [("pause", Answer.DELIVERED, "a", 0.0), *sequence]
    for (kind, *_), b in zip(paused, run(paused), strict=True):
        if kind == "resume":
            break
        assert b.state == BreakerState.PAUSED


@given(answers, st.floats(min_value=0, max_value=1e9))
def test_a_delivery_always_closes_an_unpaused_breaker(answer: Answer, now: float) -> None:
    b = after_answer(CLOSED, answer, lead_id="a", now=now, policy=POLICY)
    assert after_answer(b, Answer.DELIVERED, lead_id="z", now=now, policy=POLICY) == CLOSED
