"""The one ISO 8601 formatter/parser and the one JSON-object check."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from pipeline.client import Delivered, TransientFailure, classify
from pipeline.jsontext import dumps, json_type, object_problem
from pipeline.timefmt import iso, parse_iso8601, parse_since


def test_iso_formats_epoch_seconds_in_utc_to_the_millisecond() -> None:
    assert iso(0) == "1970-01-01T00:00:00.000+00:00"
    assert iso("1700000000.25") == "2023-11-14T22:13:20.250+00:00"
    assert iso(None) is None and iso("") is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-01-02T03:04:05Z", datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)),
        (" 2026-01-02T03:04:05 ", datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)),
        ("2026-01-02T05:04:05+02:00", datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)),
        ("2026-01-02", datetime(2026, 1, 2, tzinfo=UTC)),
    ],
)
def test_parse_iso8601_reads_z_offsets_and_naive_times_as_utc(
    text: str, expected: datetime
) -> None:
    parsed = parse_iso8601(text)
    assert parsed == expected and parsed.tzinfo is not None
    assert parse_since(text) == expected.timestamp()


@pytest.mark.parametrize("text", ["yesterday", "", "2026-13-01", "12:00 PM"])
def test_parse_iso8601_refuses_anything_else(text: str) -> None:
    with pytest.raises(ValueError):
        parse_iso8601(text)


def test_iso_and_parse_round_trip() -> None:
    assert parse_since(iso(1_700_000_000.5) or "") == 1_700_000_000.5


@pytest.mark.parametrize(
    ("value", "kind"),
    [({}, "object"), ([], "array"), ("", "string"), (1.5, "number"), (False, "boolean")],
)
def test_json_type_and_the_object_check(value: object, kind: str) -> None:
    assert json_type(value) == kind
    expected = None if kind == "object" else f"payload must be a JSON object, got {kind}"
    assert object_problem(value) == expected
    assert object_problem(None, what="body") == "body must be a JSON object, got null"


def test_dumps_is_compact_and_always_utf8_encodable() -> None:
    text = dumps({"a": "\ud800", "b": "é"})
    text.encode("utf-8")
    assert json.loads(text) == {"a": "\ud800", "b": "é"}
    assert dumps([1, {"x": None}]) == '[1,{"x":null}]'


def test_a_2xx_too_deeply_nested_to_read_is_still_delivered() -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    assert classify(200, deep, {}) == Delivered(200)
    transient = classify(503, deep, {})
    assert isinstance(transient, TransientFailure) and transient.status == 503
