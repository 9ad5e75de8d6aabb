"""Poison and hostile input (issue 6, case 8): whatever arrives on `leads.ingest`, the
worker keeps its pid and keeps consuming, every message with an id ends `dead` with a
reason a person can act on, nothing is ever unpickled, and a valid lead sent after all
of it is delivered."""

from __future__ import annotations

import json
import os
import pickle
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from leadpipe.runner import WorkerProcess
from tests.reliability.conftest import ReliabilityStack, StackFactory, wait_until
from tests.reliability.messages import envelope, push, task_body
from tests.stack import valid_payload

pytestmark = pytest.mark.reliability

VIN = "1HGCM82633A004352"
BIG = "x" * 5_000_000  # 5 MB


def _lead(**changes: Any) -> dict[str, Any]:
    lead = {"firstName": "Jane", "lastName": "Doe", "email": "jane.doe@example.com"}
    lead.update(changes)
    return {k: v for k, v in lead.items() if v is not _DROP}


def _vehicle(**changes: Any) -> dict[str, Any]:
    vehicle: dict[str, Any] = {"vin": VIN, "state": "CA", "mileage": 42000}
    vehicle.update(changes)
    return {k: v for k, v in vehicle.items() if v is not _DROP}


_DROP = object()


def _nested(depth: int) -> Any:
    value: Any = "bottom"
    for _ in range(depth):
        value = {"n": value}
    return value


#: (id, payload, what the dead letter must say: a field path or words of the message)
BAD_PAYLOADS: list[tuple[str, Any, str]] = [
    # every rule of PartnerLeadRequest, broken once
    ("no-lead", {"vehicle": _vehicle()}, "lead"),
    ("no-vehicle", {"lead": _lead()}, "vehicle"),
    ("first-empty", {"lead": _lead(firstName=""), "vehicle": _vehicle()}, "lead.firstName"),
    ("first-51", {"lead": _lead(firstName="J" * 51), "vehicle": _vehicle()}, "lead.firstName"),
    ("last-missing", {"lead": _lead(lastName=_DROP), "vehicle": _vehicle()}, "lead.lastName"),
    ("last-51", {"lead": _lead(lastName="D" * 51), "vehicle": _vehicle()}, "lead.lastName"),
    ("email-bad", {"lead": _lead(email="not-an-email"), "vehicle": _vehicle()}, "lead.email"),
    ("email-missing", {"lead": _lead(email=_DROP), "vehicle": _vehicle()}, "lead.email"),
    ("state-zz", {"lead": _lead(), "vehicle": _vehicle(state="ZZ")}, "vehicle.state"),
    ("state-3", {"lead": _lead(), "vehicle": _vehicle(state="CAL")}, "vehicle.state"),
    ("state-missing", {"lead": _lead(), "vehicle": _vehicle(state=_DROP)}, "vehicle.state"),
    ("mileage-0", {"lead": _lead(), "vehicle": _vehicle(mileage=0)}, "vehicle.mileage"),
    ("mileage-big", {"lead": _lead(), "vehicle": _vehicle(mileage=250_001)}, "vehicle.mileage"),
    ("mileage-missing", {"lead": _lead(), "vehicle": _vehicle(mileage=_DROP)}, "vehicle.mileage"),
    ("year-1989", {"lead": _lead(), "vehicle": _vehicle(year=1989)}, "vehicle.year"),
    ("year-2031", {"lead": _lead(), "vehicle": _vehicle(year=2031)}, "vehicle.year"),
    ("vin-16", {"lead": _lead(), "vehicle": _vehicle(vin=VIN[:16])}, "vehicle.vin"),
    ("vin-ioq", {"lead": _lead(), "vehicle": _vehicle(vin="1HGCM82633A00435Q")}, "vehicle.vin"),
    ("vin-check", {"lead": _lead(), "vehicle": _vehicle(vin="1HGCM82643A004352")}, "vehicle.vin"),
    (
        "mmy-partial",
        {"lead": _lead(), "vehicle": _vehicle(vin=_DROP, make="Toyota", model="Camry")},
        "vehicle",
    ),
    (
        "plate-9",
        {"lead": _lead(), "vehicle": _vehicle(vin=_DROP, licensePlate="ABCDE1234")},
        "vehicle.licensePlate",
    ),
    ("no-vehicle-id", {"lead": _lead(), "vehicle": _vehicle(vin=_DROP)}, "vehicle"),
    ("partner-101", valid_payload(partner="p" * 101), "partner"),  # sent without partner=
    ("txn-101", valid_payload(transactionId="t" * 101), "transactionId"),
    ("utm-2001", valid_payload(utmParameters="u" * 2001), "utmParameters"),
    # wrong types and nulls
    ("first-number", {"lead": _lead(firstName=42), "vehicle": _vehicle()}, "lead.firstName"),
    ("mileage-float", {"lead": _lead(), "vehicle": _vehicle(mileage=1.5)}, "vehicle.mileage"),
    ("mileage-bool", {"lead": _lead(), "vehicle": _vehicle(mileage=True)}, "vehicle.mileage"),
    ("mileage-text", {"lead": _lead(), "vehicle": _vehicle(mileage="lots")}, "vehicle.mileage"),
    ("year-list", {"lead": _lead(), "vehicle": _vehicle(year=[2020])}, "vehicle.year"),
    ("vehicle-list", {"lead": _lead(), "vehicle": [1, 2]}, "vehicle"),
    ("lead-null", {"lead": None, "vehicle": _vehicle()}, "lead"),
    ("lead-string", {"lead": "Jane Doe", "vehicle": _vehicle()}, "lead"),
    ("all-null", {"lead": None, "vehicle": None}, "vehicle"),
    ("payload-null", None, "must be a JSON object, got null"),
    ("payload-list", [valid_payload()], "must be a JSON object, got array"),
    ("payload-string", "lead", "must be a JSON object, got string"),
    ("payload-number", 42, "must be a JSON object, got number"),
    ("payload-bool", True, "must be a JSON object, got boolean"),
    ("payload-empty", {}, "lead"),
    # size and shape
    ("5mb-name", {"lead": _lead(firstName=BIG), "vehicle": _vehicle()}, "bytes; the limit is"),
    ("5mb-extra", valid_payload(notes=BIG), "bytes; the limit is"),
    ("nested-in-lead", {"lead": _nested(300), "vehicle": _vehicle()}, "lead"),
    # control characters only: nothing is left of the name once they are removed
    (
        "controls-only",
        {"lead": _lead(firstName="\x00\x07\x1b\x7f"), "vehicle": _vehicle()},
        "lead.firstName",
    ),
    ("zero-width-email", {"lead": _lead(email="\u200b"), "vehicle": _vehicle()}, "lead.email"),
    # lone surrogates: valid JSON escapes, not valid Unicode text
    (
        "surrogate-name",
        {"lead": _lead(firstName="\udc80\ud800"), "vehicle": _vehicle()},
        "lead.firstName",
    ),
]

#: Hostile but *valid* leads: a name may contain quotes, angle brackets and SQL;
#: they are data, delivered as JSON strings, never interpreted.
HOSTILE_VALID: list[tuple[str, dict[str, Any]]] = [
    ("nested-500-extra", {"extra": _nested(500)}),  # an unknown key: ignored, with a warning
    ("sql-name", {"lead": _lead(lastName="O'Brien'); DROP TABLE leads;--")}),
    ("html-name", {"lead": _lead(firstName="<script>alert(1)</script>")}),
    ("controls-inside", {"lead": _lead(firstName="Ja\x00n\x1be")}),
    ("unicode-name", {"lead": _lead(firstName="Zoë 李 \u202eevil")}),
]


class Marker:
    """Unpickling this creates a directory: proof that a pickle body was loaded."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.mkdir, (self.path,))


def _ok() -> bytes:
    return task_body(valid_payload(), partner="acme")


def _raw(body: bytes, *, says: str | None, **options: Any) -> tuple[str, bytes, str | None]:
    lead_id = f"raw-{uuid.uuid4()}"
    return lead_id, envelope(body, lead_id=lead_id, **options), says


def _raw_messages(marker: Path) -> list[tuple[str, bytes, str | None]]:
    """Hand-built messages with an id: (lead id, list entry, what its dead letter says;
    None where Celery reads the message after all and the lead goes through)."""
    pickled = pickle.dumps(Marker(str(marker)))
    pickle_type = "application/x-python-serialize"
    deep_array = ("[" * 5000 + "]" * 5000).encode()  # the sender's json refuses this depth
    deep_payload = b'[[{"lead": ' + b'{"a": ' * 5000 + b"1" + b"}" * 5000 + b"}], {}, {}]"
    return [
        _raw(b"{this is not json", says="cannot be decoded"),
        _raw(b'[["\xff\xfe invalid utf-8"], {}, {}]', says="cannot be decoded"),
        _raw(deep_array, says="cannot be decoded"),
        _raw(deep_payload, says="cannot be decoded"),
        _raw(pickled, content_type=pickle_type, says="accepts application/json only"),
        _raw(pickled, content_type=pickle_type, content_encoding="binary", says="json only"),
        _raw(_ok(), content_type="application/x-yaml", says="accepts application/json only"),
        _raw(_ok(), task="leads.nope", says="unknown task 'leads.nope'"),
        _raw(_ok(), task="celery.backend_cleanup", says="unknown task 'celery.backend_cleanup'"),
        _raw(b'{"args": "not a list"}', says="malformed task message"),
        _raw(b"[]", says="malformed task message"),
        _raw(b"null", says="malformed task message"),
        _raw(b'["not a list", {}, {}]', says="malformed task message"),
        _raw(b'[[], "not an object", {}]', says="malformed task message"),
        _raw(_ok(), headers={"timelimit": "x"}, says="malformed task message"),
        _raw(_ok(), headers={"expires": "garbage"}, says="invalid expires value"),
        _raw(_ok(), headers={"eta": "garbage"}, says="invalid ETA value"),
        _raw(b'[[1], {"payload": {"lead": 1}}, {}]', says="must be a JSON object, got number"),
        # Celery copes with these: the lead inside goes through like any other.
        _raw(_ok(), headers={"retries": "many"}, says=None),
        _raw(_ok(), headers={"argsrepr": {"x": 1}, "kwargsrepr": 5}, says=None),
        _raw(task_body(valid_payload(), partner="acme", payload=1, task="x"), says=None),
        _raw(task_body(valid_payload(), self="x"), says="keyword argument named 'self'"),
    ]


def _entry(**changes: Any) -> bytes:
    """A list entry that is JSON but not quite a kombu envelope."""
    entry: dict[str, Any] = {
        "body": "W1tdLCB7fSwge31d",  # base64 of [[], {}, {}]
        "content-type": "application/json",
        "content-encoding": "utf-8",
        "headers": {"task": "leads.ingest", "id": f"raw-{uuid.uuid4()}"},
        "properties": {
            "body_encoding": "base64",
            "delivery_tag": str(uuid.uuid4()),
            "delivery_info": {"exchange": "", "routing_key": "leads.ingest"},
        },
    }
    for name, value in changes.items():
        if name in entry["properties"]:
            entry["properties"][name] = value
        else:
            entry[name] = value
    return json.dumps(entry).encode()


#: Entries without an id that can name a lead: counted and logged, never recorded.
ID_LESS: list[bytes] = [
    b"this is not a kombu envelope at all",
    b"\xff\xfe\x00 not even UTF-8",
    b'"a JSON string"',
    b"[1, 2, 3]",
    b'{"body": 42}',
    _entry(body_encoding="rot13"),
    _entry(body="%%% not base64 %%%"),
    _entry(delivery_tag=5),
    _entry(delivery_info=None),
    _entry(headers=["not", "an", "object"]),
    envelope(_ok(), lead_id="id with spaces\nand a forged log line"),
    envelope(_ok(), lead_id="\udc80 a lone surrogate"),
    envelope(_ok(), lead_id="x" * 300),
]


@pytest.fixture(scope="module")
def poison(module_stacks: StackFactory) -> tuple[ReliabilityStack, WorkerProcess]:
    stack = module_stacks()
    worker = stack.start_worker("poison", concurrency=4)
    return stack, worker


def test_poison_never_stops_the_worker_and_every_lead_with_an_id_ends_dead_with_a_reason(
    poison: tuple[ReliabilityStack, WorkerProcess], tmp_path: Path
) -> None:
    stack, worker = poison
    pid = worker.pid
    marker = tmp_path / "unpickled"
    bad: dict[str, str] = {}
    hostile: dict[str, str] = {}
    raw = _raw_messages(marker)
    # Given a worker, when every kind of bad input arrives on leads.ingest
    for name, payload, says in BAD_PAYLOADS:
        # `partner=` would win over the payload's own partner (CONTRACT section 3)
        partner = None if name == "partner-101" else "acme"
        bad[stack.send(payload, partner=partner)] = says
    for name, changes in HOSTILE_VALID:
        hostile[stack.send(valid_payload(**changes), partner="acme")] = name
    for _lead_id, entry, _says in raw:
        push(stack.redis, entry)
    for entry in ID_LESS:
        push(stack.redis, entry)

    # Then every message with an id reaches a terminal state ...
    ledger = stack.ledger([*bad, *hostile, *(r[0] for r in raw)], timeout=60)
    # ... each bad one dead `invalid` with a message naming the field or the problem
    for lead_id, says in bad.items():
        record = stack.record(lead_id)
        assert record is not None
        assert (record["state"], record["reason"]) == ("dead", "invalid"), lead_id
        assert says in json.dumps(record["error"]), (says, record["error"])
    for lead_id, _entry_bytes, expected in raw:
        record = stack.record(lead_id)
        assert record is not None
        if expected is None:
            assert record["state"] == "delivered", (lead_id, record["state"])
            continue
        assert (record["state"], record["reason"]) == ("dead", "invalid"), (expected, record)
        assert expected in record["error"]["message"], (expected, record["error"])
    # ... hostile but valid names are data: delivered, as JSON strings, unchanged
    for lead_id, name in hostile.items():
        record = stack.record(lead_id)
        assert record is not None and record["state"] == "delivered", name
    customers = {
        name: (stack.record(lead_id) or {})["request"]["customer"]
        for lead_id, name in hostile.items()
    }
    assert customers["sql-name"]["lastName"] == "O'Brien'); DROP TABLE leads;--"
    assert customers["html-name"]["firstName"] == "<script>alert(1)</script>"
    # ... the id-less entries are counted, not lost silently
    wait_until(
        lambda: (
            int(stack.redis.hget(stack.store.keys.counters, "messages.unreadable") or 0)
            >= len(ID_LESS)
        ),
        timeout=20,
        what=f"{len(ID_LESS)} unreadable entries counted",
    )
    unreadable = int(stack.redis.hget(stack.store.keys.counters, "messages.unreadable") or 0)
    assert unreadable == len(ID_LESS)
    # ... nothing was ever unpickled, the worker is the same process, still consuming
    assert not marker.exists(), "a pickle body was deserialized"
    assert worker.process is not None and worker.process.poll() is None
    assert worker.pid == pid
    after = stack.send(valid_payload(), partner="acme")
    assert stack.ledger([after], timeout=20).states[after] == "delivered"
    stack.assert_delivered_once([after])
    log = worker.log_text()
    assert "Unrecoverable error" not in log
    assert "Connection to broker lost" not in log
    # ... and no body made it into the log (unreadable entries, customer data)
    assert "this is not a kombu envelope" not in log
    assert "jane.doe@example.com" not in log
    print(
        f"\npoison: {len(bad)} bad payloads, {len(raw)} hand-built messages, "
        f"{len(ID_LESS)} id-less entries ({unreadable} counted), {len(hostile)} hostile-valid; "
        f"{ledger.summary()}; worker pid {pid} unchanged"
    )


JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(max_size=60)
)
JSON = st.recursive(
    JSON_SCALARS,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)
FIELDS = [
    ("lead", "firstName"),
    ("lead", "lastName"),
    ("lead", "email"),
    ("vehicle", "vin"),
    ("vehicle", "state"),
    ("vehicle", "mileage"),
    ("vehicle", "year"),
    ("vehicle", "make"),
    ("vehicle", "licensePlate"),
    (None, "lead"),
    (None, "vehicle"),
    (None, "transactionId"),
    (None, "utmParameters"),
]


def _mutated(field: tuple[str | None, str], value: Any) -> dict[str, Any]:
    payload = valid_payload()
    parent, name = field
    (payload[parent] if parent else payload)[name] = value
    return payload


PAYLOADS = JSON | st.builds(_mutated, st.sampled_from(FIELDS), JSON)


def test_arbitrary_json_always_ends_in_a_terminal_state(
    poison: tuple[ReliabilityStack, WorkerProcess],
) -> None:
    stack, worker = poison
    pid = worker.pid
    sent: list[str] = []

    @settings(
        max_examples=30,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(payload=PAYLOADS, partner=st.none() | st.just("acme") | JSON)
    def feed(payload: Any, partner: Any) -> None:
        lead_id = stack.send(payload, **({} if partner is None else {"partner": partner}))
        sent.append(lead_id)
        record = stack.wait_for([lead_id], timeout=20)[lead_id]
        if record["state"] == "dead":
            assert record["reason"] in ("invalid", "unroutable"), record
            assert record["error"]["message"], record

    feed()
    ledger = stack.ledger(sent)
    assert worker.process is not None and worker.process.poll() is None and worker.pid == pid
    print(f"\nhypothesis: {ledger.summary()}")
