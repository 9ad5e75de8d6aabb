"""Every row of CONTRACT section 4's table, driven by a bare Celery client through a
real worker process, a real Redis and a real HTTP stand-in for myKaarma."""

from __future__ import annotations

import uuid

import pytest

from leadpipe.runner import WorkerProcess
from tests.stack import Stack, valid_payload

pytestmark = pytest.mark.integration

VEHICLE = {"state": "CA", "mileage": 42000}


@pytest.fixture(scope="module", autouse=True)
def worker(stack: Stack) -> WorkerProcess:
    return stack.start_worker("flow", concurrency=8)


def test_valid_lead_is_delivered_once_with_the_prospect_recorded(stack: Stack) -> None:
    # Given a valid lead for a routed partner
    lead_id = stack.send(valid_payload(), partner="acme")
    # When the pipeline has run
    record = stack.wait_for([lead_id])[lead_id]
    # Then it is delivered, once, with what myKaarma answered
    assert record["state"] == "delivered"
    assert record["prospectUuid"]
    assert record["isNewCreated"] is True
    assert record["vehicleIdMethod"] == "vin"
    assert record["dealerUuid"] == "d-ok"
    assert [a["status"] for a in record["attempts"]] == [200]
    stack.assert_delivered_once([lead_id])
    seen = [r for r in stack.fake.requests if r["leadId"] == lead_id]
    assert seen[0]["idempotencyKey"] == lead_id
    assert seen[0]["authOk"] is True


def test_the_lead_id_is_the_message_id_the_sender_chose(stack: Stack) -> None:
    chosen = f"partner-chosen-{uuid.uuid4()}"
    lead_id = stack.send(valid_payload(), partner="acme", task_id=chosen)
    assert lead_id == chosen
    assert stack.wait_for([chosen])[chosen]["state"] == "delivered"
    assert stack.fake.stored_lead_ids().get(chosen) == 1


def test_a_lead_sent_without_queue_lands_on_celery_and_is_still_processed(stack: Stack) -> None:
    lead_id = stack.send(valid_payload(), partner="acme", queue=None)
    assert stack.wait_for([lead_id])[lead_id]["state"] == "delivered"


def test_each_vehicle_method_is_resolved_and_sent(stack: Stack) -> None:
    by_mmy = valid_payload(
        vehicle={
            "make": "toyota",
            "model": "Camry",
            "year": "2020",
            "state": "ca",
            "mileage": "45,000",
        }
    )
    by_plate = valid_payload(vehicle={"licensePlate": "abc-123", "state": "NY", "mileage": 1})
    ids = [stack.send(by_mmy, partner="acme"), stack.send(by_plate, partner="acme")]
    records = stack.wait_for(ids)
    assert [records[i]["vehicleIdMethod"] for i in ids] == ["make_model_year", "plate_state"]
    assert all(records[i]["state"] == "delivered" for i in ids)


def test_state_routing_applies_when_the_partner_has_no_section(stack: Stack) -> None:
    payload = valid_payload(vehicle={"vin": "1HGCM82633A004352", "state": "TX", "mileage": 10})
    lead_id = stack.send(payload, partner="no-section")
    record = stack.wait_for([lead_id])[lead_id]
    assert (record["state"], record["dealerUuid"]) == ("delivered", "d-tx")


@pytest.mark.parametrize(
    ("partner", "status"),
    [("reject", 400), ("notfound", 404)],
)
def test_a_4xx_is_dead_at_once_as_rejected_with_the_status_and_error(
    stack: Stack, partner: str, status: int
) -> None:
    lead_id = stack.send(valid_payload(), partner=partner)
    record = stack.wait_for([lead_id])[lead_id]
    assert (record["state"], record["reason"]) == ("dead", "rejected")
    assert record["error"]["status"] == status
    assert len(record["attempts"]) == 1
    if partner == "reject":
        assert record["error"]["mykaarma"]["code"] == "INVALID_REQUEST"


def test_a_flaky_mykaarma_is_retried_with_backoff_then_delivered(stack: Stack) -> None:
    lead_id = stack.send(valid_payload(), partner="flaky")
    record = stack.wait_for([lead_id])[lead_id]
    assert record["state"] == "delivered"
    assert [a["status"] for a in record["attempts"]] == [503, 503, 200]
    delays = [a["delaySeconds"] for a in record["attempts"][:2]]
    assert all(0 <= d <= 0.5 for d in delays)
    stack.assert_delivered_once([lead_id])


@pytest.mark.parametrize("partner", ["broken", "down", "timeout"])
def test_transient_failures_end_exhausted_after_max_attempts(stack: Stack, partner: str) -> None:
    lead_id = stack.send(valid_payload(), partner=partner)
    record = stack.wait_for([lead_id], timeout=40)[lead_id]
    assert (record["state"], record["reason"]) == ("dead", "exhausted")
    assert len(record["attempts"]) == 4  # LEADPIPE_RETRY_MAX_ATTEMPTS in the stack
    assert "gave up after 4 attempts" in record["error"]["message"]


def test_retry_after_is_honoured_above_the_backoff(stack: Stack) -> None:
    lead_id = stack.send(valid_payload(), partner="ratelimited")
    record = stack.wait_for([lead_id])[lead_id]
    first, second = record["attempts"]
    assert (first["status"], second["status"]) == (429, 200)
    assert first["delaySeconds"] >= 0.3
    gap = _seconds(second["at"]) - _seconds(first["at"])
    assert gap >= 0.3


def test_an_invalid_lead_is_dead_with_one_message_per_field(stack: Stack) -> None:
    payload = {
        "lead": {"firstName": "", "lastName": "x" * 51, "email": "not-an-email"},
        "vehicle": {"state": "ZZ", "mileage": 0},
    }
    lead_id = stack.send(payload, partner="acme")
    record = stack.wait_for([lead_id])[lead_id]
    assert (record["state"], record["reason"]) == ("dead", "invalid")
    fields = {e["field"] for e in record["error"]["errors"]}
    assert {
        "lead.firstName",
        "lead.lastName",
        "lead.email",
        "vehicle.state",
        "vehicle.mileage",
    } <= fields
    assert record["payload"] == payload
    assert stack.fake.stored_lead_ids().get(lead_id) is None


def test_a_lead_without_route_is_dead_unroutable(stack: Stack) -> None:
    lead_id = stack.send(valid_payload(), partner="nobody")
    record = stack.wait_for([lead_id])[lead_id]
    assert (record["state"], record["reason"]) == ("dead", "unroutable")
    assert "routing file" in record["error"]["message"]


def test_a_section_without_a_dealer_routes_its_leads_to_unroutable(stack: Stack) -> None:
    # Given a routing file whose [partners.nodealer] names no dealer, nor does [defaults]
    # (the file is read, not refused: the other partners still deliver)
    vehicle = {**VEHICLE, "vin": "1HGCM82633A004352", "state": "TX"}
    lead_id = stack.send(valid_payload(vehicle=vehicle), partner="nodealer")
    record = stack.wait_for([lead_id])[lead_id]
    # Then its lead is dead, unroutable, even though [states.TX] names a dealer
    assert (record["state"], record["reason"]) == ("dead", "unroutable")
    assert stack.fake.stored_lead_ids().get(lead_id) is None


def test_a_vin_with_i_o_or_q_beside_make_model_year_is_set_aside(stack: Stack) -> None:
    vehicle = {**VEHICLE, "vin": "1HGCM82633AOO4352", "make": "Honda", "model": "Accord"}
    vehicle["year"] = 2003
    lead_id = stack.send(valid_payload(vehicle=vehicle), partner="acme")
    record = stack.wait_for([lead_id])[lead_id]
    assert (record["state"], record["vehicleIdMethod"]) == ("delivered", "make_model_year")
    assert any(w.startswith("vehicle.vin holds") for w in record["warnings"])
    assert stack.fake.stored_lead_ids().get(lead_id) == 1


def test_the_partner_argument_wins_over_the_payload_with_a_warning(stack: Stack) -> None:
    lead_id = stack.send(valid_payload(partner="someone-else"), partner="acme")
    record = stack.wait_for([lead_id])[lead_id]
    assert (record["state"], record["partner"]) == ("delivered", "acme")
    assert any("partner" in w for w in record["warnings"])


def test_a_second_lead_with_the_same_transaction_is_a_duplicate(stack: Stack) -> None:
    payload = valid_payload()
    first = stack.send(payload, partner="acme")
    stack.wait_for([first])
    second = stack.send(payload, partner="acme")
    record = stack.wait_for([second])[second]
    assert (record["state"], record["duplicateOf"]) == ("duplicate", first)
    assert stack.fake.stored_lead_ids().get(second) is None


def test_a_dead_lead_does_not_block_a_corrected_resubmission(stack: Stack) -> None:
    broken = valid_payload(vehicle={"vin": "1HGCM82633A004352", "state": "CA"})  # no mileage
    first = stack.send(broken, partner="acme")
    assert stack.wait_for([first])[first]["reason"] == "invalid"
    fixed = valid_payload(transactionId=broken["transactionId"])
    second = stack.send(fixed, partner="acme")
    assert stack.wait_for([second])[second]["state"] == "delivered"


def test_the_same_lead_id_sent_three_times_is_delivered_once(stack: Stack) -> None:
    lead_id = str(uuid.uuid4())
    for _ in range(3):
        stack.send(valid_payload(), partner="acme", task_id=lead_id)
    assert stack.wait_for([lead_id])[lead_id]["state"] == "delivered"
    stack.assert_delivered_once([lead_id])


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ([1, 2, 3], "payload must be a JSON object, got array"),
        ("just a string", "payload must be a JSON object, got string"),
        (None, "payload must be a JSON object, got null"),
        ({"lead": "x" * 5_000_000}, "bytes; the limit is"),
    ],
    ids=["list", "string", "null", "5MB"],
)
def test_unusable_payloads_end_dead_invalid_under_their_id(
    stack: Stack, payload: object, message: str
) -> None:
    lead_id = stack.send(payload, partner="acme")
    record = stack.wait_for([lead_id])[lead_id]
    assert (record["state"], record["reason"]) == ("dead", "invalid")
    assert message in record["error"]["message"]


def _seconds(stamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(stamp).timestamp()
