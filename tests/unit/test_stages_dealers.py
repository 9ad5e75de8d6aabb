"""Stage decisions of dealer health (CONTRACT sections 4 and 8) over the in-memory
store: 401/403 hold instead of kill, breakers open and probe, age and attempt limits.
The same flows run on Redis with real workers in tests/integration/test_dealer_health.py.
"""

from __future__ import annotations

import json

from pipeline.breaker import CLOSED, BreakerReason, BreakerState
from pipeline.record_fields import RecordField as F
from pipeline.stages import Step
from pipeline.states import DeadReason, LeadState
from tests.unit.memory_store import POLICY
from tests.unit.test_stages import DEALER, LEASE_SECONDS, http, make, payload

ERROR = {"statusCode": 401, "error": {"code": "UNAUTHORIZED", "description": "no"}}


def test_401_holds_the_lead_and_opens_every_dealer() -> None:
    # Given another dealer already known to the store
    p = make(http(401, ERROR))
    p.store.breakers["d-other"] = p.store.breaker("d-other")
    lead_id = p.validated()
    # When myKaarma answers 401
    assert p.stages.deliver(lead_id) == Step(lead_id, None, "held")
    # Then the lead is held, not dead, its attempt logged; every breaker is open
    record = p.record(lead_id)
    assert record[F.STATE] == LeadState.HELD
    assert record[F.HELD_REASON] == BreakerReason.UNAUTHORIZED
    assert F.REASON not in record
    assert p.store.attempts[lead_id][0]["outcome"] == "unauthorized"
    assert p.store.counters["attempts.unauthorized"] == 1
    for dealer in (DEALER, "d-other"):
        b = p.store.breaker(dealer)
        assert (b.state, b.reason) == (BreakerState.OPEN, BreakerReason.UNAUTHORIZED)


def test_403_holds_only_that_dealer() -> None:
    p = make(http(403, {"statusCode": 403}))
    p.store.breakers["d-other"] = p.store.breaker("d-other")
    lead_id = p.validated()
    assert p.stages.deliver(lead_id).outcome == "held"
    assert p.store.breaker(DEALER).reason == BreakerReason.FORBIDDEN
    assert p.store.breaker("d-other").state == BreakerState.CLOSED


def test_failures_in_a_row_open_the_breaker_and_later_leads_are_held_unposted() -> None:
    # Given a dealer that fails as many times in a row as the policy allows
    p = make(*[http(503)] * POLICY.failures, max_attempts=5)
    ids = [p.validated(f"lead-{i}", body=payload_for(i)) for i in range(POLICY.failures + 1)]
    outcomes = [p.stages.deliver(i).outcome for i in ids[:-1]]
    # Then the failure that reached the threshold held its lead instead of a retry
    assert outcomes == ["retry"] * (POLICY.failures - 1) + ["held"]
    # And a lead arriving while the breaker is open is held without a POST
    assert p.stages.deliver(ids[-1]) == Step(ids[-1], None, "held")
    assert len(p.mykaarma.posts) == POLICY.failures
    assert p.record(ids[-1]).get(F.ATTEMPT_COUNT, "0") == "0"


def test_after_the_cooldown_one_probe_goes_and_its_2xx_releases_the_rest() -> None:
    p = make(http(403, {"statusCode": 403}), http(200), http(200), http(200))
    ids = [p.validated(f"lead-{i}", body=payload_for(i)) for i in range(3)]
    assert p.stages.deliver(ids[0]).outcome == "held"
    assert [p.stages.deliver(i).outcome for i in ids[1:]] == ["held", "held"]
    assert p.stages.release_held() == []  # cooldown not over
    p.clock.advance(POLICY.first_cooldown)
    probes = p.stages.release_held()
    assert len(probes) == 1 and probes[0].next == "deliver"
    assert p.stages.deliver(probes[0].lead_id).outcome == "delivered"
    assert p.store.breaker(DEALER).state == BreakerState.CLOSED
    rest = p.stages.release_held()
    assert sorted(s.lead_id for s in rest) == sorted(set(ids) - {probes[0].lead_id})
    assert [p.stages.deliver(s.lead_id).outcome for s in rest] == ["delivered", "delivered"]
    assert p.mykaarma.posts[1][2] == probes[0].lead_id


def test_a_lead_past_the_age_limit_expires_without_a_post() -> None:
    p = make()
    lead_id = p.validated()
    p.clock.advance(p.store.max_age_seconds)
    assert p.stages.deliver(lead_id) == Step(lead_id, None, "dead:expired")
    assert p.record(lead_id)[F.REASON] == DeadReason.EXPIRED
    assert "LEADPIPE_MAX_LEAD_AGE_HOURS" in json.loads(p.record(lead_id)[F.ERROR])["message"]
    assert p.mykaarma.posts == []


def test_a_held_lead_past_the_age_limit_expires_in_the_releaser() -> None:
    p = make(http(403, {"statusCode": 403}))
    lead_id = p.validated()
    assert p.stages.deliver(lead_id).outcome == "held"
    p.clock.advance(p.store.max_age_seconds)
    assert p.stages.release_held() == []
    assert p.record(lead_id)[F.REASON] == DeadReason.EXPIRED


def test_a_lead_held_after_its_last_attempt_ends_exhausted_without_a_post() -> None:
    p = make(http(503), http(401, ERROR), max_attempts=2)
    lead_id = p.validated()
    assert p.stages.deliver(lead_id).outcome == "retry"
    p.clock.advance(LEASE_SECONDS)
    assert p.stages.release_due_retries() == [Step(lead_id, "deliver", "due")]
    assert p.stages.deliver(lead_id).outcome == "held"
    p.store.breakers[DEALER] = CLOSED  # an operator resumed the dealer
    assert [s.lead_id for s in p.stages.release_held()] == [lead_id]
    assert p.stages.deliver(lead_id) == Step(lead_id, None, "dead:exhausted")
    assert len(p.mykaarma.posts) == 2
    assert p.record(lead_id)[F.REASON] == DeadReason.EXHAUSTED
    assert lead_id in p.store.dead_by_reason[DeadReason.EXHAUSTED]


def test_a_forgotten_held_lead_is_never_released_or_posted() -> None:
    # Given a lead held by its dealer's open breaker (401)
    p = make(http(401, ERROR), http(200, {"prospectUuid": "p"}))
    lead_id = p.validated()
    assert p.stages.deliver(lead_id).outcome == "held"
    # When it is forgotten, and later the dealer is resumed
    p.store.forget(lead_id)
    p.store.breakers[DEALER] = CLOSED
    # Then nothing releases it, and a stray delivery finds no lead
    assert p.stages.release_held() == []
    assert p.stages.deliver(lead_id) == Step(lead_id, None, "missing")
    assert len(p.mykaarma.posts) == 1


def payload_for(i: int) -> dict[str, object]:
    return payload(transactionId=f"txn-{i}")
