"""Properties of normalization and validation over arbitrary JSON (hypothesis)."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from pipeline.normalize import normalize_payload
from pipeline.us_states import US_STATE_CODES
from pipeline.validation import validate_lead

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30)
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)

LEAD_KEYS = ["firstName", "lastName", "email", "phone"]
VEHICLE_KEYS = ["state", "licensePlate", "make", "model", "mileage", "vin", "year", "color"]
VINS = ["1HGCM82633A004352", "1HGCM82643A004352", "WVWZZZ1JZXW000001", "1M8GDM9AXKP042788"]

# Values close to what partners send, so that the deep paths of validation are reached.
PLAUSIBLE = (
    st.sampled_from([*sorted(US_STATE_CODES), "tx", " ny ", "XX", ""])
    | st.sampled_from([*VINS, "1hgcm-82633a004352", "1HGCM82633A00435I"])
    | st.integers(min_value=-10, max_value=300_000)
    | st.integers(min_value=0, max_value=300_000).map(lambda n: f"{n:,}")
    | st.sampled_from(
        ["toyota", "Camry", "BMW", "  2020 ", "2020.0", "ABC-123", "jane@example.com"]
    )
    | st.text(max_size=60)
)
FIELD_VALUES = PLAUSIBLE | JSON_VALUES


def _section(keys: list[str]) -> st.SearchStrategy[Any]:
    return st.dictionaries(st.sampled_from(keys) | st.text(max_size=5), FIELD_VALUES, max_size=8)


PAYLOAD_SHAPED = st.fixed_dictionaries(
    {},
    optional={
        "lead": _section(LEAD_KEYS) | JSON_VALUES,
        "vehicle": _section(VEHICLE_KEYS) | JSON_VALUES,
        "partner": FIELD_VALUES,
        "transactionId": FIELD_VALUES,
        "utmParameters": FIELD_VALUES,
        "extra": JSON_VALUES,
    },
)
ANY_JSON_OBJECT = st.dictionaries(st.text(max_size=12), JSON_VALUES, max_size=6)

NAMES = st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=50)
MOSTLY_VALID = st.fixed_dictionaries(
    {
        "lead": st.fixed_dictionaries(
            {
                "firstName": NAMES,
                "lastName": NAMES,
                "email": st.sampled_from(["jane@example.com", " JOHN.DOE@Example.org ", "a@b.co"]),
            }
        ),
        "vehicle": st.fixed_dictionaries(
            {
                "state": st.sampled_from([*sorted(US_STATE_CODES), "tx", " ca"]),
                "mileage": st.integers(1, 250_000)
                | st.integers(1, 250_000).map(lambda n: f"{n:,}"),
            },
            optional={
                "vin": st.sampled_from(VINS),
                "make": st.sampled_from(["toyota", "Honda", "mercedes benz", "newco"]),
                "model": st.sampled_from(["Camry", " civic ", "F-150"]),
                "year": st.integers(1990, 2030) | st.integers(1990, 2030).map(str),
                "licensePlate": st.sampled_from(["abc-123", "7XYZ999", " a b "]),
                "color": st.text(max_size=5),
            },
        ),
    },
    optional={
        "partner": st.sampled_from(["acme", " globex ", ""]),
        "transactionId": st.text(max_size=20),
        "utmParameters": st.sampled_from(["utm_source=a&utm_campaign=b", "?utm_medium=cps", ""]),
    },
)


@settings(max_examples=300)
@given(PAYLOAD_SHAPED | ANY_JSON_OBJECT)
def test_normalize_payload_is_idempotent(raw: dict[str, Any]) -> None:
    once = normalize_payload(raw)
    assert normalize_payload(once) == once


@settings(max_examples=300)
@given(JSON_VALUES | PAYLOAD_SHAPED | MOSTLY_VALID, st.sampled_from([None, "acme", " x "]))
def test_validate_lead_never_raises_and_always_decides(raw: Any, partner: str | None) -> None:
    result = validate_lead(raw, partner=partner)
    assert result.valid is (result.lead is not None) is (not result.errors)
    assert (result.method is not None) is result.valid
    # Whatever came in, the report is printable JSON (no lone surrogates, no NaN).
    text = json.dumps(result.to_json(), ensure_ascii=False, allow_nan=False)
    text.encode("utf-8")


@settings(max_examples=200)
@given(MOSTLY_VALID, st.sampled_from([None, "acme", "globex"]))
def test_a_valid_leads_normalized_request_validates_to_the_same_result(
    raw: dict[str, Any], partner: str | None
) -> None:
    first = validate_lead(raw, partner=partner)
    assume(first.valid)
    second = validate_lead(first.normalized, partner=partner)
    assert second.valid
    assert second.method is first.method
    assert second.normalized == first.normalized
    assert second.lead == first.lead
    # Unknown keys and a replaced partner were dealt with the first time.
    assert set(second.warnings) <= set(first.warnings)


@given(
    st.text(
        alphabet=st.characters(
            min_codepoint=33, max_codepoint=126, exclude_characters="-"
        ),  # printable ASCII, kept by normalization
        min_size=17,
        max_size=17,
    )
)
@settings(max_examples=200)
def test_any_17_character_vin_beside_make_model_year_keeps_the_lead_valid(vin: str) -> None:
    # CONTRACT section 4: the most accurate *usable* method wins; an unusable VIN
    # (I, O or Q, any other odd character, a failing check digit) is only a warning.
    vehicle = {"state": "TX", "mileage": 1, "vin": vin, "make": "Honda", "model": "Accord"}
    payload = {
        "lead": {"firstName": "Jane", "lastName": "Doe", "email": "jane@example.com"},
        "vehicle": {**vehicle, "year": 2003},
    }
    result = validate_lead(payload)
    assert result.valid, result.errors
    assert result.lead is not None
    if result.method is not None and result.method.value == "make_model_year":
        assert result.lead.vin is None
        assert any(w.startswith("vehicle.vin") for w in result.warnings)
    else:
        assert result.lead.vin == result.normalized["vehicle"]["vin"]
