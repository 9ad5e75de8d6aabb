"""Every rule of seed 000 (PartnerLeadRequest), both sides of every boundary."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from pydantic import ValidationError

from pipeline import models, vin
from pipeline.lead import VehicleIdMethod
from pipeline.models import PartnerLeadRequest, VehicleSearchInfo
from pipeline.validation import validate_lead

#: A real VIN whose check digit is right (Honda Accord 2003).
GOOD_VIN = "1HGCM82633A004352"
MISSING = object()


def valid_payload(**vehicle: Any) -> dict[str, Any]:
    """A valid lead identified by VIN; `vehicle` overrides vehicle fields."""
    payload: dict[str, Any] = {
        "lead": {"firstName": "Jane", "lastName": "Doe", "email": "jane.doe@example.com"},
        "vehicle": {"state": "TX", "vin": GOOD_VIN, "mileage": 45000},
        "partner": "acme",
        "transactionId": "tx-1",
        "utmParameters": "utm_source=partner&utm_medium=cps&utm_campaign=lead-gen",
    }
    payload["vehicle"].update(vehicle)
    return payload


def with_value(payload: dict[str, Any], path: str, value: object) -> dict[str, Any]:
    """A copy of `payload` with the dotted `path` set to `value` (MISSING deletes it)."""
    result = copy.deepcopy(payload)
    *parents, leaf = path.split(".")
    target = result
    for part in parents:
        target = target[part]
    if value is MISSING:
        target.pop(leaf, None)
    else:
        target[leaf] = value
    return result


def errors_of(payload: object) -> dict[str, str]:
    result = validate_lead(payload)
    assert result.valid is (not result.errors)
    return {error.field: error.message for error in result.errors}


# (path, value, valid?, expected message fragment when invalid)
BOUNDARIES = [
    # lead.firstName / lead.lastName: required, 1-50
    ("lead.firstName", "a" * 50, True, None),
    ("lead.firstName", "a" * 51, False, "must be 1 to 50 characters (got 51 characters)"),
    ("lead.firstName", "", False, "must be 1 to 50 characters (got 0 characters)"),
    ("lead.firstName", "   ", False, "(got 0 characters)"),
    ("lead.firstName", MISSING, False, "is required"),
    ("lead.firstName", None, False, "is required"),
    ("lead.firstName", 42, False, "must be a string (got number)"),
    ("lead.lastName", "b" * 50, True, None),
    ("lead.lastName", "b" * 51, False, "must be 1 to 50 characters (got 51 characters)"),
    ("lead.lastName", "", False, "must be 1 to 50 characters"),
    ("lead.lastName", MISSING, False, "is required"),
    # vehicle.year: 1990-2030
    ("vehicle.year", 1989, False, "must be a whole number between 1990 and 2030 (got 1989)"),
    ("vehicle.year", 1990, True, None),
    ("vehicle.year", 2030, True, None),
    ("vehicle.year", 2031, False, "between 1990 and 2030 (got 2031)"),
    ("vehicle.year", "2003", True, None),
    ("vehicle.year", 1.5, False, "(got 1.5)"),
    ("vehicle.year", True, False, "(got true)"),
    ("vehicle.year", "20x3", False, '(got "20x3")'),
    # vehicle.mileage: required, 1-250,000
    ("vehicle.mileage", 0, False, "must be a whole number between 1 and 250,000 (got 0)"),
    ("vehicle.mileage", 1, True, None),
    ("vehicle.mileage", 250_000, True, None),
    ("vehicle.mileage", 250_001, False, "(got 250001)"),
    ("vehicle.mileage", -5, False, "(got -5)"),
    ("vehicle.mileage", MISSING, False, "is required"),
    ("vehicle.mileage", None, False, "is required"),
    ("vehicle.mileage", False, False, "(got false)"),
    ("vehicle.mileage", "45,000", True, None),
    ("vehicle.mileage", 2.5, False, "(got 2.5)"),
    # vehicle.vin: exactly 17, no I, O, Q
    ("vehicle.vin", GOOD_VIN[:16], False, "must be exactly 17 characters (got 16)"),
    ("vehicle.vin", GOOD_VIN, True, None),
    ("vehicle.vin", GOOD_VIN + "1", False, "must be exactly 17 characters (got 18)"),
    ("vehicle.vin", "1HGCM82633A00435I", False, 'other than I, O and Q (found "I")'),
    ("vehicle.vin", "1HGCM82633A00435O", False, 'other than I, O and Q (found "O")'),
    ("vehicle.vin", "1HGCM82633A00435Q", False, 'other than I, O and Q (found "Q")'),
    ("vehicle.vin", "1HGCM82633A0043$2", False, 'other than I, O and Q (found "$")'),
    # vehicle.state: required, a two-letter US code
    (
        "vehicle.state",
        "XX",
        False,
        'must be a two-letter US state code such as NY, CA or TX (got "XX")',
    ),
    ("vehicle.state", "T", False, '(got "T")'),
    ("vehicle.state", "TXX", False, '(got "TXX")'),
    ("vehicle.state", "tx", True, None),
    ("vehicle.state", "DC", True, None),
    ("vehicle.state", "PR", True, None),
    ("vehicle.state", "", False, '(got "")'),
    ("vehicle.state", MISSING, False, "is required"),
    # vehicle.licensePlate: 1-8 (with a VIN present the plate is not needed)
    ("vehicle.licensePlate", "A", True, None),
    ("vehicle.licensePlate", "ABCD1234", True, None),
    ("vehicle.licensePlate", "ABCD12345", False, 'must be 1 to 8 characters (got "ABCD12345")'),
    ("vehicle.licensePlate", "", True, None),  # an empty optional field is absent
    # fields the seed leaves open, bounded against hostile input
    ("vehicle.make", "M" * 50, True, None),
    ("vehicle.make", "M" * 51, False, "must be 1 to 50 characters (got 51 characters)"),
    ("vehicle.model", "m" * 51, False, "must be 1 to 50 characters (got 51 characters)"),
    ("partner", "p" * 100, True, None),
    ("partner", "p" * 101, False, "must be 1 to 100 characters (got 101 characters)"),
    ("transactionId", "t" * 101, False, "must be 1 to 100 characters"),
    ("utmParameters", "u" * 2001, False, "must be 1 to 2000 characters"),
    ("utmParameters", "u=" + "v" * 1998, True, None),
    # the sections themselves
    ("lead", MISSING, False, "is required"),
    ("lead", [], False, "must be an object with firstName, lastName and email (got array)"),
    ("vehicle", "TX", False, "(got string)"),
]


@pytest.mark.parametrize(("path", "value", "valid", "message"), BOUNDARIES)
def test_seed_rule_boundary(path: str, value: object, valid: bool, message: str | None) -> None:
    errors = errors_of(with_value(valid_payload(), path, value))
    if valid:
        assert errors == {}
    else:
        assert list(errors) == [path]
        assert message is not None and message in errors[path]


@pytest.mark.parametrize(
    "email",
    [
        "plainaddress",
        "@example.com",
        "jane@",
        "jane@@example.com",
        "jane doe@example.com",
        "jane@example",
        "jane..doe@example.com",
        "jane@exa_mple.com",
        "jane@localhost",
        "",
    ],
)
def test_bad_email_formats_are_rejected_without_echoing_the_address(email: str) -> None:
    errors = errors_of(with_value(valid_payload(), "lead.email", email))
    assert list(errors) == ["lead.email"]
    assert errors["lead.email"].startswith("must be a valid email address")
    if email:
        assert email not in errors["lead.email"]


@pytest.mark.parametrize(
    "email", ["jane.doe@example.com", "JANE.DOE@EXAMPLE.COM", " jane+tag@sub.example.co.uk "]
)
def test_good_emails_are_accepted_lower_cased(email: str) -> None:
    result = validate_lead(with_value(valid_payload(), "lead.email", email))
    assert result.valid
    assert result.lead is not None and result.lead.email == email.strip().lower()


def test_email_is_required() -> None:
    assert errors_of(with_value(valid_payload(), "lead.email", MISSING)) == {
        "lead.email": "is required"
    }


# The vehicle rule: VIN; or make+model+year together; or licensePlate+state.
MMY = {"make": "Toyota", "model": "Camry", "year": 2020}


@pytest.mark.parametrize(
    ("vehicle", "method"),
    [
        ({"vin": GOOD_VIN}, VehicleIdMethod.VIN),
        (MMY, VehicleIdMethod.MAKE_MODEL_YEAR),
        ({"licensePlate": "ABC123"}, VehicleIdMethod.PLATE_STATE),
        ({"vin": GOOD_VIN, **MMY, "licensePlate": "ABC123"}, VehicleIdMethod.VIN),
        ({**MMY, "licensePlate": "ABC123"}, VehicleIdMethod.MAKE_MODEL_YEAR),
        (
            {"make": "Toyota", "model": "Camry", "licensePlate": "ABC123"},
            VehicleIdMethod.PLATE_STATE,
        ),
        ({"vin": GOOD_VIN, "make": "Toyota"}, VehicleIdMethod.VIN),
    ],
)
def test_vehicle_rule_accepts(vehicle: dict[str, Any], method: VehicleIdMethod) -> None:
    payload = valid_payload()
    payload["vehicle"] = {"state": "TX", "mileage": 1000, **vehicle}
    result = validate_lead(payload)
    assert result.errors == ()
    assert result.method is method


@pytest.mark.parametrize(
    ("vehicle", "message"),
    [
        ({}, "identify the vehicle: give a VIN, or make, model and year together"),
        ({"make": "Toyota", "model": "Camry"}, "missing year"),
        ({"make": "Toyota", "year": 2020}, "missing model"),
        ({"model": "Camry", "year": 2020}, "missing make"),
        ({"make": "Toyota"}, "missing model and year"),
        ({"year": 2020}, "missing make and model"),
        ({"vin": "", "licensePlate": "", "make": ""}, "identify the vehicle"),
    ],
)
def test_vehicle_rule_rejects(vehicle: dict[str, Any], message: str) -> None:
    payload = valid_payload()
    payload["vehicle"] = {"state": "TX", "mileage": 1000, **vehicle}
    errors = errors_of(payload)
    assert list(errors) == ["vehicle"]
    assert message in errors["vehicle"]


def test_plate_without_state_is_impossible_because_state_is_required() -> None:
    payload = valid_payload()
    payload["vehicle"] = {"licensePlate": "ABC123", "mileage": 1000}
    assert errors_of(payload) == {"vehicle.state": "is required"}


class TestStrictModels:
    """The models judge normalized data: no coercion of their own."""

    def test_model_accepts_a_normalized_payload(self) -> None:
        request = PartnerLeadRequest.model_validate(valid_payload())
        assert request.vehicle.vin == GOOD_VIN
        assert request.lead.first_name == "Jane"
        assert request.transaction_id == "tx-1"

    @pytest.mark.parametrize(
        ("field", "value"),
        [("mileage", "45000"), ("mileage", True), ("year", 2020.0), ("year", "2020")],
    )
    def test_model_does_not_coerce_numbers(self, field: str, value: object) -> None:
        data = {"state": "TX", "vin": GOOD_VIN, "mileage": 45000, field: value}
        with pytest.raises(ValidationError) as info:
            VehicleSearchInfo.model_validate(data)
        assert [error["loc"] for error in info.value.errors()] == [(field,)]

    def test_model_does_not_upper_case_the_state(self) -> None:
        with pytest.raises(ValidationError):
            VehicleSearchInfo.model_validate({"state": "tx", "vin": GOOD_VIN, "mileage": 1})

    def test_model_rejects_an_empty_plate(self) -> None:
        with pytest.raises(ValidationError) as info:
            VehicleSearchInfo.model_validate({"state": "TX", "licensePlate": "", "mileage": 1})
        assert info.value.errors()[0]["type"] == "string_too_short"

    def test_model_is_frozen(self) -> None:
        request = PartnerLeadRequest.model_validate(valid_payload())
        with pytest.raises(ValidationError):
            request.vehicle.mileage = 5


def test_messages_are_worded_from_the_models_bounds() -> None:
    # One place for every bound: the messages quote the constants of pipeline.models.
    cases = {
        "lead.firstName": ("a" * (models.NAME_MAX_CHARS + 1), f"1 to {models.NAME_MAX_CHARS} "),
        "vehicle.licensePlate": (
            "P" * (models.PLATE_MAX_CHARS + 1),
            f"to {models.PLATE_MAX_CHARS} ",
        ),
        "vehicle.year": (models.YEAR_MAX + 1, f"between {models.YEAR_MIN} and {models.YEAR_MAX}"),
        "vehicle.mileage": (models.MILEAGE_MAX + 1, f"and {models.MILEAGE_MAX:,}"),
        "vehicle.vin": (GOOD_VIN[:-1], f"exactly {models.VIN_CHARS} characters"),
        "utmParameters": ("u" * (models.UTM_MAX_CHARS + 1), f"to {models.UTM_MAX_CHARS} "),
    }
    for path, (value, fragment) in cases.items():
        errors = errors_of(with_value(valid_payload(), path, value))
        assert fragment in errors[path], (path, errors)


def test_vin_rules_come_from_the_model() -> None:
    assert vin.VIN_LENGTH == models.VIN_CHARS
    assert frozenset(models.VIN_ALPHABET) == vin.VIN_CHARACTERS
    assert not {"I", "O", "Q"} & vin.VIN_CHARACTERS
    assert (vin.MIN_MODEL_YEAR, vin.MAX_MODEL_YEAR) == (models.YEAR_MIN, models.YEAR_MAX)
