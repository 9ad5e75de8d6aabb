"""The fake myKaarma's answers decided without a server (`FakeLeadApi`)."""

from __future__ import annotations

import base64

import pytest

from leadpipe.fake_mykaarma import DROPPED, FakeLeadApi, check_lead_body
from leadpipe.fake_mykaarma.behaviour import LeadRequest


def request(lead_id: str = "lead-1", dealer: str = "d-1", **overrides: object) -> LeadRequest:
    fields: dict[str, object] = {
        "dealer_uuid": dealer,
        "lead_id": lead_id,
        "idempotency_key": None,
        "auth_ok": True,
        "body_error": None,
    }
    fields.update(overrides)
    return LeadRequest(**fields)  # type: ignore[arg-type]


def answer(api: FakeLeadApi, lead: LeadRequest) -> tuple[int | None, bool]:
    behaviour, _ = api.behaviour_for(lead.dealer_uuid)
    result = api.answer(lead, behaviour, arrived=0.0)
    return result.status, result.stored


def test_flaky_fails_n_times_per_lead_then_stores_once() -> None:
    api = FakeLeadApi(behaviours={"d-1": "flaky:2"}, seed=1)
    assert [answer(api, request()) for _ in range(4)] == [
        (503, False),
        (503, False),
        (200, True),
        (200, True),
    ]
    # A second lead has its own count
    assert answer(api, request("lead-2")) == (503, False)
    assert api.stored_lead_ids() == {"lead-1": 2}
    assert api.stats()["by_status"] == {"503": 3, "200": 2}


def test_the_star_behaviour_applies_to_dealers_without_their_own() -> None:
    api = FakeLeadApi(latency_ms=5, behaviours={"*": "down", "d-ok": "ok,slow:40"})
    behaviour, latency = api.behaviour_for("d-other")
    assert (behaviour.kind, latency) == ("down", 5)
    assert answer(api, request(dealer="d-other")) == (None, False)
    assert api.requests[-1]["status"] == DROPPED
    behaviour, latency = api.behaviour_for("d-ok")
    assert (behaviour.kind, latency) == ("ok", 40)


def test_auth_then_body_are_checked_before_the_behaviour() -> None:
    api = FakeLeadApi(username="u", password="p", behaviours={"*": "ok"})
    good = "Basic " + base64.b64encode(b"u:p").decode()
    bad = "Basic " + base64.b64encode(b"u:x").decode()
    assert api.check_auth(good) and not api.check_auth(bad) and not api.check_auth(None)
    assert answer(api, request(auth_ok=False)) == (401, False)
    assert answer(api, request(body_error="missing or invalid: services")) == (400, False)
    assert api.stored_lead_ids() == {}


@pytest.mark.parametrize(
    ("raw", "complaint"),
    [
        (b"[1]", "body is not a JSON object"),
        (b"{", "body is not JSON"),
        (b'{"status": "NEW"}', "missing or invalid: customer, vehicle, dealerDetails"),
    ],
)
def test_check_lead_body_names_the_problem(raw: bytes, complaint: str) -> None:
    _, problem = check_lead_body(raw)
    assert problem is not None and problem.startswith(complaint)


def test_unmatched_credentials_are_refused() -> None:
    with pytest.raises(ValueError, match="both username and password"):
        FakeLeadApi(username="u")
