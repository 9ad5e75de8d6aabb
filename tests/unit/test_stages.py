"""Every decision of the pipeline stages, over an in-memory store: fast, no Redis, no
Celery, no HTTP. myKaarma's answers go through the real `classify()` so a status code
here means what it means in production; the real-worker tests keep the real HTTP fake.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from pipeline.client import DeliveryOutcome, TransientFailure, classify
from pipeline.record_fields import RecordField as F
from pipeline.routing import NO_ROUTES, RoutingTable, parse_routing
from pipeline.stages import RetryPolicy, Stages, Step
from pipeline.states import DeadReason, LeadState
from pipeline.store_protocol import UNREADABLE_MESSAGES
from tests.unit.memory_store import MemoryStore

DEALER = "d-0001"
ROUTES = parse_routing(
    textwrap.dedent(
        f"""
        [defaults]
        dealer_uuid = "{DEALER}"
        dealer_name = "Main Street Motors"
        source = "MMC"
        lead_type = "SERVICE_DEMAND"
        services = [{{ code = "VSC", name = "Vehicle service contract" }}]
        """
    ),
    origin="routes.toml",
)
BASE_SECONDS = 2.0
MAX_DELAY_SECONDS = 60.0
LEASE_SECONDS = 30.0
START = 1_700_000_000.0


def payload(**overrides: Any) -> dict[str, Any]:
    """A lead every rule accepts (VIN method)."""
    value: dict[str, Any] = {
        "lead": {"firstName": "Jane", "lastName": "Doe", "email": "jane.doe@example.com"},
        "vehicle": {"vin": "1HGCM82633A004352", "state": "CA", "mileage": 42000},
        "partner": "acme",
        "transactionId": "txn-1",
    }
    value.update(overrides)
    return value


@dataclass
class Clock:
    now: float = START

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class FakeMyKaarma:
    """`MyKaarmaClient.deliver`'s signature; answers from a script, in order."""

    answers: list[DeliveryOutcome | Callable[[], DeliveryOutcome]] = field(default_factory=list)
    posts: list[tuple[str, dict[str, Any], str]] = field(default_factory=list)

    def deliver(self, dealer_uuid: str, body: dict[str, Any], *, lead_id: str) -> DeliveryOutcome:
        self.posts.append((dealer_uuid, body, lead_id))
        answer = self.answers.pop(0)
        return answer() if callable(answer) else answer


def http(status: int, body: object = None, **headers: str) -> DeliveryOutcome:
    """What the client makes of one HTTP answer (the production classification)."""
    content = b"" if body is None else json.dumps(body).encode()
    return classify(status, content, headers)


@dataclass
class Pipeline:
    stages: Stages
    store: MemoryStore
    clock: Clock
    mykaarma: FakeMyKaarma

    def received(self, lead_id: str = "lead-1", **kwargs: Any) -> str:
        step = self.stages.ingest(lead_id, kwargs.pop("body", payload()), **kwargs)
        assert step == Step(lead_id, "enrich", "received")
        return lead_id

    def validated(self, lead_id: str = "lead-1", **kwargs: Any) -> str:
        self.received(lead_id, **kwargs)
        assert self.stages.enrich(lead_id) == Step(lead_id, "deliver", "validated")
        return lead_id

    def record(self, lead_id: str) -> dict[str, str]:
        return self.store.records[lead_id]

    def error(self, lead_id: str) -> dict[str, Any]:
        return dict(json.loads(self.record(lead_id)[F.ERROR]))


def make(
    *answers: DeliveryOutcome | Callable[[], DeliveryOutcome],
    max_attempts: int = 3,
    routing: RoutingTable = ROUTES,
    max_payload_bytes: int = 10_000,
) -> Pipeline:
    store = MemoryStore(max_attempts=max_attempts)
    clock, mykaarma = Clock(), FakeMyKaarma(list(answers))
    stages = Stages(
        store=store,
        routing=lambda: routing,
        client=lambda: mykaarma,
        retry=RetryPolicy(max_attempts, BASE_SECONDS, MAX_DELAY_SECONDS),
        lease_seconds=LEASE_SECONDS,
        max_payload_bytes=max_payload_bytes,
        clock=clock,
    )
    return Pipeline(stages, store, clock, mykaarma)


@pytest.fixture
def p() -> Pipeline:
    return make()


# -- ingest -----------------------------------------------------------------------------


def test_ingest_records_the_lead_as_received_and_asks_for_enrich(p: Pipeline) -> None:
    lead_id = p.received()
    record = p.record(lead_id)
    assert record[F.STATE] == LeadState.RECEIVED
    assert json.loads(record[F.PAYLOAD]) == payload()
    assert (record[F.PARTNER], record[F.TRANSACTION_ID]) == ("acme", "txn-1")
    assert record[F.RECEIVED_AT] == "2023-11-14T22:13:20.000+00:00"
    assert json.loads(record[F.WARNINGS]) == []
    assert lead_id in p.store.active


def test_ingest_keeps_the_senders_arguments_and_warns_about_odd_ones(p: Pipeline) -> None:
    p.received("a", partner=" zeta ", received_at="2026-01-02T03:04:05Z", ignored=("extra",))
    record = p.record("a")
    assert (record[F.PARTNER], record[F.PARTNER_HINT]) == ("zeta", "zeta")
    assert record[F.RECEIVED_AT] == "2026-01-02T03:04:05+00:00"
    assert json.loads(record[F.WARNINGS]) == ["ignored unexpected task argument extra"]

    p.received("b", partner=42, received_at="yesterday")
    assert F.PARTNER_HINT not in p.record("b")
    assert json.loads(p.record("b")[F.WARNINGS]) == [
        "received_at is not an ISO 8601 time; using the time of arrival",
        "partner argument is not a non-empty string; ignored",
    ]
    p.received("c", received_at="2026-01-02T03:04:05")  # naive means UTC
    assert p.record("c")[F.RECEIVED_AT] == "2026-01-02T03:04:05+00:00"


def test_a_second_ingest_of_the_same_id_changes_nothing(p: Pipeline) -> None:
    lead_id = p.received()
    # still received (e.g. the first enrich message was lost): enrich again
    again = p.stages.ingest(lead_id, payload(transactionId="other"))
    assert again == Step(lead_id, "enrich", "received")
    assert p.record(lead_id)[F.TRANSACTION_ID] == "txn-1"
    p.stages.enrich(lead_id)
    assert p.stages.ingest(lead_id, payload()) == Step(lead_id, None, "validated")


@pytest.mark.parametrize(
    ("body", "kind"),
    [(None, "null"), ([1, 2], "array"), ("lead", "string"), (42, "number"), (True, "boolean")],
)
def test_a_payload_that_is_not_an_object_is_dead_on_arrival(
    p: Pipeline, body: object, kind: str
) -> None:
    assert p.stages.ingest("x", body) == Step("x", None, "dead:invalid")
    assert p.store.state("x") == LeadState.DEAD
    assert p.record("x")[F.REASON] == DeadReason.INVALID
    assert p.error("x")["message"] == f"payload must be a JSON object, got {kind}"
    assert json.loads(p.record("x")[F.PAYLOAD]) == body
    assert "x" in p.store.dead_by_reason["invalid"] and "x" not in p.store.active


def test_an_oversized_payload_is_dead_with_a_preview_only() -> None:
    p = make(max_payload_bytes=500)
    big = payload(notes="n" * 5_000)
    assert p.stages.ingest("big", big) == Step("big", None, "dead:invalid")
    kept = json.loads(p.record("big")[F.PAYLOAD])
    assert kept["truncated"] is True and kept["bytes"] > 5_000
    assert len(kept["preview"]) == 2_000
    assert p.error("big")["message"] == f"payload is {kept['bytes']} bytes; the limit is 500 bytes"
    assert p.record("big")[F.TRANSACTION_ID] == "txn-1"  # still findable by the sender


def test_an_unreadable_message_is_a_dead_letter_without_its_body(p: Pipeline) -> None:
    description = {"unreadableMessage": True, "contentType": "application/x-python", "bytes": 9}
    step = p.stages.unreadable("m-1", "message refused", description)
    assert step == Step("m-1", None, "dead:invalid")
    assert json.loads(p.record("m-1")[F.PAYLOAD]) == description
    assert p.error("m-1")["errors"] == [{"field": "payload", "message": "message refused"}]
    # the same id again: nothing changes, the existing state is reported
    assert p.stages.unreadable("m-1", "again", {}) == Step("m-1", None, "dead")


def test_a_message_without_a_usable_id_is_only_counted(p: Pipeline) -> None:
    p.stages.drop_message("no id")
    assert p.store.counters[UNREADABLE_MESSAGES] == 1
    assert p.store.records == {}


# -- enrich -----------------------------------------------------------------------------


def test_enrich_validates_routes_and_builds_the_mykaarma_body(p: Pipeline) -> None:
    lead_id = p.validated()
    record = p.record(lead_id)
    assert record[F.STATE] == LeadState.VALIDATED
    assert record[F.DEALER_UUID] == DEALER
    assert record[F.ROUTE_SECTION] == "defaults"
    assert record[F.VEHICLE_ID_METHOD] == "vin"
    request = json.loads(record[F.REQUEST])
    assert request["customer"]["firstName"] == "Jane"
    assert json.loads(record[F.NORMALIZED])["lead"]["email"] == "jane.doe@example.com"


def test_an_invalid_lead_is_dead_with_every_field_error(p: Pipeline) -> None:
    p.received(body=payload(lead={"firstName": "", "lastName": "Doe", "email": "nope"}))
    assert p.stages.enrich("lead-1") == Step("lead-1", None, "dead:invalid")
    error = p.error("lead-1")
    fields = {e["field"] for e in error["errors"]}
    assert {"lead.firstName", "lead.email"} <= fields
    assert error["message"].startswith("lead.")
    assert p.record("lead-1")[F.REASON] == DeadReason.INVALID


def test_a_lead_no_section_routes_is_dead_unroutable() -> None:
    p = make(routing=NO_ROUTES)
    p.received()
    assert p.stages.enrich("lead-1") == Step("lead-1", None, "dead:unroutable")
    assert p.error("lead-1")["message"].startswith("no dealer for partner acme and state CA")
    assert "lead-1" in p.store.dead_by_reason["unroutable"]


def test_a_second_lead_with_a_live_transaction_is_a_duplicate(p: Pipeline) -> None:
    owner = p.validated("first")
    p.received("second")
    assert p.stages.enrich("second") == Step("second", None, "duplicate")
    assert p.record("second")[F.DUPLICATE_OF] == owner
    # another partner's transaction of the same id is another lead
    p.validated("third", body=payload(partner="zeta"))


def test_enrich_skips_a_lead_that_is_not_received(p: Pipeline) -> None:
    lead_id = p.validated()
    assert p.stages.enrich(lead_id) == Step(lead_id, None, "validated")
    assert p.stages.enrich("nobody") == Step("nobody", None, "missing")


def test_a_replayed_lead_leaves_the_dead_letters_once_enriched(p: Pipeline) -> None:
    # Given a lead replayed by an operator whose CLI died before dropping the entry
    p.received()
    p.store.put("lead-1", **{F.REPLAYED_AT: str(START)})
    p.store.dead["lead-1"] = START
    p.store.dead_by_reason["unroutable"] = {"lead-1": START}
    # When it is enriched again
    assert p.stages.enrich("lead-1").outcome == "validated"
    # Then its dead-letter entries are gone
    assert "lead-1" not in p.store.dead and p.store.dead_by_reason["unroutable"] == {}


def test_a_replayed_lead_that_dies_again_keeps_its_fresh_dead_letter() -> None:
    p = make(routing=NO_ROUTES)
    p.received()
    p.store.put("lead-1", **{F.REPLAYED_AT: str(START)})
    p.store.dead_by_reason["invalid"] = {"lead-1": START - 1}
    assert p.stages.enrich("lead-1").outcome == "dead:unroutable"
    assert "lead-1" in p.store.dead and "lead-1" in p.store.dead_by_reason["unroutable"]
    assert p.store.dead_by_reason["invalid"] == {}


# -- deliver: what myKaarma's answer means ------------------------------------------------


def test_a_2xx_with_a_prospect_is_delivered_with_what_mykaarma_said() -> None:
    warning = {"code": "W1", "description": "phone missing"}
    body = {"prospectUuid": "p-1", "isNewCreated": True, "warnings": [warning]}
    p = make(http(201, body))
    lead_id = p.validated()
    p.clock.advance(0.25)
    assert p.stages.deliver(lead_id) == Step(lead_id, None, "delivered")
    record = p.record(lead_id)
    assert record[F.STATE] == LeadState.DELIVERED
    assert (record[F.PROSPECT_UUID], record[F.IS_NEW_CREATED]) == ("p-1", "true")
    assert json.loads(record[F.MYKAARMA_WARNINGS]) == [warning]
    assert F.DELIVERY_TOKEN not in record and F.LEASE_UNTIL not in record
    assert p.store.attempts[lead_id] == [
        {"attempt": 1, "at": "2023-11-14T22:13:20.250+00:00", "durationMs": 0.0}
        | {"status": 201, "outcome": "delivered"}
    ]
    assert p.store.latencies == [pytest.approx(0.25)]
    dealer, sent, posted_id = p.mykaarma.posts[0]
    assert (dealer, posted_id) == (DEALER, lead_id)
    assert sent == json.loads(record[F.REQUEST])


@pytest.mark.parametrize("body", [None, {"statusCode": 200}, "not an envelope"])
def test_a_2xx_without_a_prospect_is_still_delivered(body: object) -> None:
    p = make(http(200, body))
    lead_id = p.validated()
    assert p.stages.deliver(lead_id).outcome == "delivered"
    record = p.record(lead_id)
    assert F.PROSPECT_UUID not in record and F.MYKAARMA_WARNINGS not in record
    assert F.IS_NEW_CREATED not in record


@pytest.mark.parametrize("status", [400, 404, 409, 422])
def test_any_other_4xx_is_rejected_at_once(status: int) -> None:
    envelope = {"statusCode": status, "error": {"code": "BAD", "description": "no"}}
    p = make(http(status, envelope))
    lead_id = p.validated()
    assert p.stages.deliver(lead_id) == Step(lead_id, None, "dead:rejected")
    assert p.record(lead_id)[F.REASON] == DeadReason.REJECTED
    error = p.error(lead_id)
    assert error["status"] == status
    assert error["message"] == f"myKaarma rejected the lead with HTTP {status}"
    assert error["mykaarma"] == {"code": "BAD", "description": "no"}
    assert p.store.attempts[lead_id][0]["outcome"] == "rejected"
    assert p.store.counters["attempts.rejected"] == 1
    assert len(p.mykaarma.posts) == 1


@pytest.mark.parametrize(
    "answer",
    [
        http(408),
        http(425),
        http(429),
        http(500),
        http(502),
        http(503, {"error": {"code": "DOWN", "description": "maintenance"}}),
        http(302, Location="https://elsewhere.example/"),
        TransientFailure(None, "timeout: ReadTimeout"),
        TransientFailure(None, "connection error: refused"),
    ],
)
def test_transient_answers_are_retried_with_backoff(answer: DeliveryOutcome) -> None:
    p = make(answer)
    lead_id = p.validated()
    assert p.stages.deliver(lead_id) == Step(lead_id, None, "retry")
    record = p.record(lead_id)
    assert record[F.STATE] == LeadState.DELIVERING
    due = p.store.retry[lead_id]
    assert START <= due <= START + BASE_SECONDS  # attempt 1: full jitter in [0, base]
    assert float(record[F.NEXT_ATTEMPT_AT]) == due
    assert F.DELIVERY_TOKEN not in record
    (attempt,) = p.store.attempts[lead_id]
    assert attempt["outcome"] == "transient" and attempt["attempt"] == 1
    assert attempt["delaySeconds"] == pytest.approx(due - START, abs=1e-3)
    assert "retryAfter" not in attempt


def test_retry_after_wins_over_the_backoff() -> None:
    p = make(http(429, None, **{"Retry-After": "120"}))
    lead_id = p.validated()
    p.stages.deliver(lead_id)
    assert p.store.retry[lead_id] == START + 120
    (attempt,) = p.store.attempts[lead_id]
    assert (attempt["retryAfter"], attempt["delaySeconds"]) == (120.0, 120.0)


def test_a_retry_waits_for_its_due_time_then_is_released_and_posted_again() -> None:
    p = make(http(503), http(200, {"prospectUuid": "p-9"}))
    lead_id = p.validated()
    p.stages.deliver(lead_id)
    due = p.store.retry[lead_id]
    # a redelivered message before the backoff has passed is not posted
    p.clock.now = due - 0.001
    assert p.stages.release_due_retries() == []
    p.store.active[lead_id] = p.clock.now  # as if it were still in the active index
    assert p.stages.deliver(lead_id) == Step(lead_id, None, "early")
    p.clock.now = due
    assert p.stages.release_due_retries() == [Step(lead_id, "deliver", "due")]
    assert p.stages.release_due_retries() == []  # released once
    assert p.stages.deliver(lead_id).outcome == "delivered"
    assert [a["attempt"] for a in p.store.attempts[lead_id]] == [1, 2]
    assert len(p.mykaarma.posts) == 2


def test_the_last_allowed_attempt_ends_exhausted() -> None:
    p = make(http(503), TransientFailure(None, "timeout: ReadTimeout"), http(500), max_attempts=3)
    lead_id = p.validated()
    outcomes = []
    for _ in range(3):
        outcomes.append(p.stages.deliver(lead_id).outcome)
        p.clock.now = p.store.retry.get(lead_id, p.clock.now)
        p.stages.release_due_retries()
    assert outcomes == ["retry", "retry", "dead:exhausted"]
    assert p.record(lead_id)[F.REASON] == DeadReason.EXHAUSTED
    error = p.error(lead_id)
    assert error["status"] == 500
    assert error["message"].startswith("gave up after 3 attempts; last: HTTP 500")
    assert [a["outcome"] for a in p.store.attempts[lead_id]] == ["transient"] * 3
    assert lead_id not in p.store.retry and lead_id in p.store.dead_by_reason["exhausted"]


def test_a_single_attempt_policy_gives_up_at_once() -> None:
    p = make(http(503), max_attempts=1)
    lead_id = p.validated()
    assert p.stages.deliver(lead_id).outcome == "dead:exhausted"


# -- the delivery guard -----------------------------------------------------------------


def test_a_delivered_lead_is_never_posted_again() -> None:
    p = make(http(200))
    lead_id = p.validated()
    p.stages.deliver(lead_id)
    assert p.stages.deliver(lead_id) == Step(lead_id, None, "skip")
    assert len(p.mykaarma.posts) == 1


def test_a_lead_held_by_a_live_delivery_is_busy(p: Pipeline) -> None:
    lead_id = p.validated()
    assert (
        p.store.begin_delivery(
            lead_id, "other", lease=LEASE_SECONDS, max_attempts=8, now=START
        ).status
        == "go"
    )
    assert p.stages.deliver(lead_id) == Step(lead_id, None, "busy")
    assert p.mykaarma.posts == []


def test_an_unknown_or_unvalidated_lead_is_not_posted(p: Pipeline) -> None:
    assert p.stages.deliver("nobody") == Step("nobody", None, "missing")
    p.received()
    assert p.stages.deliver("lead-1") == Step("lead-1", None, "skip")
    assert p.mykaarma.posts == []


def test_a_stale_delivery_cannot_finish_a_lead_another_took_over() -> None:
    # Given a POST that outlives its lease, so that another delivery takes the lead
    p = make()
    lead_id = p.validated()

    def slow_503() -> DeliveryOutcome:
        p.clock.advance(LEASE_SECONDS + 1)
        assert (
            p.store.begin_delivery(lead_id, "t2", lease=60, max_attempts=8, now=p.clock.now).status
            == "go"
        )
        return http(503)

    p.mykaarma.answers.append(slow_503)
    # When the stale one comes back with a transient failure
    assert p.stages.deliver(lead_id).outcome == "retry"
    # Then its attempt is logged but the lead stays with the new holder
    assert p.record(lead_id)[F.DELIVERY_TOKEN] == "t2"
    assert lead_id not in p.store.retry
    assert len(p.store.attempts[lead_id]) == 1


# -- the sweeper ------------------------------------------------------------------------


def test_the_sweep_re_enqueues_stuck_leads_to_the_stage_they_need(p: Pipeline) -> None:
    p.received("stuck-received")
    p.validated("stuck-validated", body=payload(transactionId="t-2"))
    p.validated("stuck-delivering", body=payload(transactionId="t-3"))
    p.store.begin_delivery("stuck-delivering", "t", lease=LEASE_SECONDS, max_attempts=8, now=START)
    p.stages.ingest("dead-one", [])
    assert p.stages.sweep() == []  # nothing is past its lease yet
    p.clock.advance(LEASE_SECONDS)
    steps = {s.lead_id: s for s in p.stages.sweep()}
    assert steps == {
        "stuck-received": Step("stuck-received", "enrich", "swept"),
        "stuck-validated": Step("stuck-validated", "deliver", "swept"),
        "stuck-delivering": Step("stuck-delivering", "deliver", "swept"),
    }
    assert F.DELIVERY_TOKEN not in p.record("stuck-delivering")  # the old holder lost it
    assert p.stages.sweep() == []  # touched: one sweep owns them


# -- issue 10: the POST cap, recording after a POST, forgotten leads -----------------------


def test_no_lead_is_posted_more_than_max_attempts_whatever_raises_after_the_post() -> None:
    # Given every recording of an outcome failing (a store refusing writes), so each
    # delivery ends with an exception after its POST ...
    p = make(*(http(503) for _ in range(10)), max_attempts=3)
    lead_id = p.validated()
    p.stages.sleep = lambda seconds: p.clock.advance(seconds)

    def refused(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("OOM command not allowed")

    p.store.schedule_retry = refused  # type: ignore[method-assign]
    p.store.after_failure = refused  # type: ignore[method-assign]
    p.store.kill = refused  # type: ignore[method-assign]
    # When the lead is delivered again and again (the sweeper after each lease)
    outcomes = []
    for _ in range(6):
        try:
            outcomes.append(p.stages.deliver(lead_id).outcome)
        except RuntimeError:
            outcomes.append("raised")
        p.clock.advance(LEASE_SECONDS + 1)
    # Then it was POSTed exactly max_attempts times, then declared exhausted
    assert len(p.mykaarma.posts) == 3
    assert outcomes[:4] == ["raised", "raised", "raised", "dead:exhausted"]
    assert (p.record(lead_id)[F.STATE], p.record(lead_id)[F.REASON]) == ("dead", "exhausted")


def test_a_store_error_while_recording_is_retried_without_another_post() -> None:
    p = make(http(200, {"prospectUuid": "p-1"}))
    lead_id = p.validated()
    p.stages.sleep = lambda seconds: p.clock.advance(seconds)
    real = p.store.mark_delivered
    failures = [RuntimeError("READONLY"), RuntimeError("OOM")]

    def flaky(*args: Any, **kwargs: Any) -> Any:
        if failures:
            raise failures.pop(0)
        return real(*args, **kwargs)

    p.store.mark_delivered = flaky  # type: ignore[method-assign]
    assert p.stages.deliver(lead_id) == Step(lead_id, None, "delivered")
    assert len(p.mykaarma.posts) == 1 and p.record(lead_id)[F.PROSPECT_UUID] == "p-1"


def test_a_client_that_raises_leaves_a_transient_attempt() -> None:
    def boom() -> DeliveryOutcome:
        raise ValueError("a bug in the client")

    p = make(boom)
    lead_id = p.validated()
    assert p.stages.deliver(lead_id).outcome == "retry"
    assert "ValueError" in p.store.attempts[lead_id][0]["error"]


def test_a_forgotten_lead_is_not_recorded_again_by_a_late_message(p: Pipeline) -> None:
    p.store.forget("lead-1")
    assert p.stages.ingest("lead-1", payload()) == Step("lead-1", None, "forgotten")
    assert "lead-1" not in p.store.records


def test_ingest_indexes_the_email_as_received(p: Pipeline) -> None:
    p.received(body=payload(lead={"firstName": "A", "lastName": "B", "email": " X@Y.example"}))
    assert p.store.emails == {"x@y.example": {"lead-1"}}


def test_exhausted_names_the_status_and_keeps_the_body_out_of_the_message() -> None:
    p = make(*(http(503, {"error": {"code": "DOWN", "description": "jane@x.example"}}),) * 3)
    lead_id = p.validated()
    for _ in range(3):
        p.stages.deliver(lead_id)
        p.clock.advance(MAX_DELAY_SECONDS + 1)
        p.stages.release_due_retries()
    error = p.error(lead_id)
    assert error["message"] == "gave up after 3 attempts; last: HTTP 503"
    assert "jane@x.example" in error["detail"]


# -- outcome notifications: which leads ask for one (CONTRACT section 9) ------------------

HOOK_SECRET = "whsec_" + "a2V5LWZvci10aGUtc3RhZ2UtdGVzdHMtMDEyMzQ1Njc4OQ=="
HOOKED = parse_routing(
    textwrap.dedent(
        f"""
        [defaults]
        dealer_uuid = "{DEALER}"

        [partners.acme]
        webhook = {{ url = "https://hooks.acme.example/leads", secret_env = "ACME_HOOK" }}
        """
    ),
    origin="hooked.toml",
    environ={"ACME_HOOK": HOOK_SECRET},
)


def test_a_lead_of_a_partner_with_a_webhook_asks_for_notifications() -> None:
    p = make(http(200), routing=HOOKED)
    lead_id = p.validated()
    assert p.record(lead_id)[F.NOTIFY] == "1"


def test_a_lead_of_another_partner_does_not() -> None:
    p = make(routing=HOOKED)
    lead_id = p.validated(body=payload(partner="globex"))
    assert p.record(lead_id)[F.NOTIFY] == "0"


def test_the_authenticated_partner_decides_and_invalid_leads_ask_too() -> None:
    p = make(routing=HOOKED)
    p.received("bad", body=payload(vehicle={"state": "CA"}, partner="globex"), partner="acme")
    assert p.stages.enrich("bad").outcome == "dead:invalid"
    assert p.record("bad")[F.NOTIFY] == "1"


def test_a_lead_dead_on_arrival_asks_when_its_partner_has_a_webhook() -> None:
    p = make(routing=HOOKED)
    assert p.stages.ingest("arr", ["not", "an", "object"], partner="acme").outcome == "dead:invalid"
    assert p.record("arr")[F.NOTIFY] == "1"
    assert p.stages.ingest("arr2", ["x"], partner="globex").outcome == "dead:invalid"
    assert F.NOTIFY not in p.record("arr2")
