"""`validate_lead`: identification, check digit, enrichment, partner, errors, warnings."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pipeline.lead import ResolvedLead, VehicleIdMethod
from pipeline.validation import FieldError, ValidationResult, validate_lead
from tests.unit.test_models_rules import GOOD_VIN, valid_payload

#: GOOD_VIN with a wrong check digit (position 9).
BAD_CHECK_DIGIT_VIN = "1HGCM82643A004352"
#: Not North American: position 9 is not a check digit and is not checked.
EUROPEAN_VIN = "WVWZZZ1JZXW000001"
MMY = {"make": "Honda", "model": "Accord", "year": 2003}


def vehicle_payload(**vehicle: Any) -> dict[str, Any]:
    payload = valid_payload()
    payload["vehicle"] = {"state": "TX", "mileage": 45000, **vehicle}
    return payload


def test_a_valid_lead_resolves_with_every_field() -> None:
    result = validate_lead(valid_payload())
    assert result.valid
    assert result.errors == ()
    assert result.warnings == ()
    assert result.method is VehicleIdMethod.VIN
    assert result.lead == ResolvedLead(
        first_name="Jane",
        last_name="Doe",
        email="jane.doe@example.com",
        state="TX",
        mileage=45000,
        method=VehicleIdMethod.VIN,
        vin=GOOD_VIN,
        make="Honda",  # decoded from the VIN
        model=None,
        year=2003,  # decoded from the VIN
        license_plate=None,
        partner="acme",
        transaction_id="tx-1",
        utm={"utm_source": "partner", "utm_medium": "cps", "utm_campaign": "lead-gen"},
    )


def test_normalization_comes_first() -> None:
    payload = valid_payload(state=" tx ", vin="1hgcm-82633a004352", mileage="45,000")
    payload["lead"]["email"] = "  Jane.Doe@Example.com "
    result = validate_lead(payload)
    assert result.valid
    assert result.normalized["vehicle"] == {"state": "TX", "vin": GOOD_VIN, "mileage": 45000}
    assert result.normalized["lead"]["email"] == "jane.doe@example.com"


class TestCheckDigit:
    def test_passing_vin_alone_is_valid(self) -> None:
        result = validate_lead(vehicle_payload(vin="1M8GDM9AXKP042788"))
        assert result.valid and result.method is VehicleIdMethod.VIN

    def test_failing_vin_alone_is_invalid(self) -> None:
        result = validate_lead(vehicle_payload(vin=BAD_CHECK_DIGIT_VIN))
        assert not result.valid and result.lead is None and result.method is None
        assert [e.field for e in result.errors] == ["vehicle.vin"]
        assert "check digit" in result.errors[0].message

    @pytest.mark.parametrize(
        ("other", "method"),
        [
            (MMY, VehicleIdMethod.MAKE_MODEL_YEAR),
            ({"licensePlate": "ABC123"}, VehicleIdMethod.PLATE_STATE),
        ],
    )
    def test_failing_vin_with_another_method_is_set_aside(
        self, other: dict[str, Any], method: VehicleIdMethod
    ) -> None:
        result = validate_lead(vehicle_payload(vin=BAD_CHECK_DIGIT_VIN, **other))
        assert result.valid and result.method is method
        assert result.lead is not None and result.lead.vin is None
        assert result.warnings == (
            f"vehicle.vin fails its check digit (position 9): set aside, "
            f"vehicle identified by {method.value}",
        )
        # The normalized request still shows what the partner sent.
        assert result.normalized["vehicle"]["vin"] == BAD_CHECK_DIGIT_VIN

    def test_set_aside_vin_does_not_enrich(self) -> None:
        result = validate_lead(vehicle_payload(vin=BAD_CHECK_DIGIT_VIN, licensePlate="ABC1"))
        assert result.lead is not None
        assert (result.lead.make, result.lead.year) == (None, None)

    def test_failing_vin_with_partial_make_model_year_is_invalid(self) -> None:
        result = validate_lead(vehicle_payload(vin=BAD_CHECK_DIGIT_VIN, make="Honda"))
        assert [e.field for e in result.errors] == ["vehicle.vin"]

    def test_non_north_american_vin_is_not_check_digit_validated(self) -> None:
        result = validate_lead(vehicle_payload(vin=EUROPEAN_VIN))
        assert result.valid and result.method is VehicleIdMethod.VIN
        assert result.lead is not None and result.lead.vin == EUROPEAN_VIN
        assert result.warnings == ()

    def test_check_digit_error_is_collected_with_other_errors(self) -> None:
        payload = vehicle_payload(vin=BAD_CHECK_DIGIT_VIN)
        payload["lead"]["firstName"] = ""
        fields = [error.field for error in validate_lead(payload).errors]
        assert fields == ["lead.firstName", "vehicle.vin"]


#: GOOD_VIN with an O where a 0 belongs: no VIN may hold I, O or Q (ISO 3779).
ILLEGAL_CHARS_VIN = "1HGCM82633AOO4352"


class TestVinCharacters:
    """CONTRACT section 4: the most accurate *usable* method wins; a VIN with a letter
    no VIN may hold is unusable, so beside another usable method it is a warning."""

    @pytest.mark.parametrize(
        ("other", "method"),
        [
            (MMY, VehicleIdMethod.MAKE_MODEL_YEAR),
            ({"licensePlate": "ABC123"}, VehicleIdMethod.PLATE_STATE),
        ],
    )
    def test_illegal_vin_with_another_method_is_set_aside(
        self, other: dict[str, Any], method: VehicleIdMethod
    ) -> None:
        result = validate_lead(vehicle_payload(vin=ILLEGAL_CHARS_VIN, **other))
        assert result.valid and result.errors == ()
        assert result.method is method
        assert result.lead is not None and result.lead.vin is None
        assert result.warnings == (
            f'vehicle.vin holds "O", which no VIN may: set aside, '
            f"vehicle identified by {method.value}",
        )
        assert result.normalized["vehicle"]["vin"] == ILLEGAL_CHARS_VIN

    @pytest.mark.parametrize(("letter"), ["I", "O", "Q"])
    def test_illegal_vin_alone_is_invalid(self, letter: str) -> None:
        result = validate_lead(vehicle_payload(vin=GOOD_VIN[:-1] + letter))
        assert not result.valid and result.method is None
        assert [e.to_json() for e in result.errors] == [
            {
                "field": "vehicle.vin",
                "message": "may contain only digits and letters other than I, O and Q "
                f'(found "{letter}")',
            }
        ]

    def test_illegal_vin_with_partial_make_model_year_is_invalid(self) -> None:
        result = validate_lead(vehicle_payload(vin=ILLEGAL_CHARS_VIN, make="Honda", year=2003))
        assert [e.field for e in result.errors] == ["vehicle.vin"]

    def test_a_vin_of_the_wrong_length_stays_invalid_beside_make_model_year(self) -> None:
        # 17 characters is a rule of the seed itself, not a question of usability.
        result = validate_lead(vehicle_payload(vin=GOOD_VIN[:16], **MMY))
        assert not result.valid
        assert [e.field for e in result.errors] == ["vehicle.vin"]


class TestEnrichment:
    def test_vin_fills_make_and_year_when_absent(self) -> None:
        lead = validate_lead(vehicle_payload(vin=GOOD_VIN, model="Accord")).lead
        assert lead is not None
        assert (lead.make, lead.model, lead.year) == ("Honda", "Accord", 2003)

    def test_given_make_and_year_are_kept(self) -> None:
        result = validate_lead(vehicle_payload(vin=GOOD_VIN, make="Acura", year=2003))
        assert result.lead is not None
        assert (result.lead.make, result.lead.year) == ("Acura", 2003)
        assert result.warnings == ()

    def test_contradicting_year_is_a_warning_and_the_given_year_wins(self) -> None:
        result = validate_lead(vehicle_payload(vin=GOOD_VIN, year=2010))
        assert result.valid
        assert result.lead is not None and result.lead.year == 2010
        assert result.warnings == (
            "vehicle.year 2010 differs from the VIN's model year 2003; kept 2010",
        )

    def test_enrichment_does_not_change_the_normalized_request(self) -> None:
        result = validate_lead(vehicle_payload(vin=GOOD_VIN))
        assert "make" not in result.normalized["vehicle"]


class TestPartner:
    def test_authenticated_partner_fills_an_absent_partner(self) -> None:
        payload = valid_payload()
        del payload["partner"]
        result = validate_lead(payload, partner="acme")
        assert result.lead is not None and result.lead.partner == "acme"
        assert result.normalized["partner"] == "acme"
        assert result.warnings == ()

    def test_authenticated_partner_wins_with_a_warning(self) -> None:
        result = validate_lead(valid_payload(), partner="globex")
        assert result.lead is not None and result.lead.partner == "globex"
        assert result.warnings == (
            'partner "acme" in the payload replaced by the authenticated partner "globex"',
        )

    def test_same_partner_gives_no_warning(self) -> None:
        assert validate_lead(valid_payload(), partner=" acme ").warnings == ()

    def test_no_partner_at_all_is_fine(self) -> None:
        payload = valid_payload()
        del payload["partner"]
        result = validate_lead(payload)
        assert result.valid and result.lead is not None and result.lead.partner is None


class TestUnknownKeys:
    def test_unknown_keys_are_ignored_with_a_warning(self) -> None:
        payload = valid_payload(color="red")
        payload["lead"]["phone"] = "555"
        payload["extra"] = {"nested": True}
        result = validate_lead(payload)
        assert result.valid
        assert result.warnings == (
            "ignored unknown key lead.phone",
            "ignored unknown key vehicle.color",
            "ignored unknown key extra",
        )
        assert "color" not in result.normalized["vehicle"]
        assert "extra" not in result.normalized

    def test_many_unknown_keys_are_summarised(self) -> None:
        payload = valid_payload()
        payload.update({f"k{i}": i for i in range(1000)})
        warnings = validate_lead(payload).warnings
        assert len(warnings) == 21
        assert warnings[-1] == "ignored 980 more unknown keys"


class TestErrors:
    def test_all_errors_are_collected_with_their_paths(self) -> None:
        # Given a payload breaking five rules
        payload = valid_payload(state="XX", vin="1HGCM82633A00435", mileage=0, year=1989)
        payload["lead"]["email"] = "not-an-email"
        # When it is validated
        result = validate_lead(payload)
        # Then each rule yields its own error, on its own path
        assert not result.valid and result.lead is None
        assert [error.field for error in result.errors] == [
            "lead.email",
            "vehicle.state",
            "vehicle.mileage",
            "vehicle.vin",
            "vehicle.year",
        ]

    @pytest.mark.parametrize(
        ("raw", "kind"),
        [([], "array"), ("lead", "string"), (42, "number"), (None, "null"), (True, "boolean")],
    )
    def test_non_object_payload_is_one_error(self, raw: object, kind: str) -> None:
        result = validate_lead(raw)
        assert result.errors == (FieldError("payload", f"must be a JSON object (got {kind})"),)
        assert result.normalized == {} and result.lead is None and not result.valid

    def test_empty_object_reports_the_missing_sections(self) -> None:
        fields = {error.field: error.message for error in validate_lead({}).errors}
        assert fields == {"lead": "is required", "vehicle": "is required"}

    def test_long_values_are_not_echoed_in_full(self) -> None:
        result = validate_lead(valid_payload(vin="A" * 5000, state="Z" * 5000))
        for error in result.errors:
            assert len(error.message) < 150

    def test_email_and_names_are_never_echoed(self) -> None:
        payload = valid_payload()
        payload["lead"] = {
            "firstName": "Secretfirst" * 5,
            "lastName": "Secretlast" * 6,
            "email": "secret.person@@example.com",
        }
        rendered = json.dumps([str(error) for error in validate_lead(payload).errors])
        assert "ecret" not in rendered
        assert rendered.count("lead.") == 3

    def test_field_error_renders_with_its_path(self) -> None:
        assert str(FieldError("vehicle.year", "is required")) == "vehicle.year: is required"


def test_to_json_has_the_contract_shape() -> None:
    result = validate_lead(valid_payload(color="red"))
    assert result.to_json() == {
        "valid": True,
        "vehicleIdMethod": "vin",
        "normalized": result.normalized,
        "errors": [],
        "warnings": ["ignored unknown key vehicle.color"],
    }
    invalid = validate_lead(valid_payload(mileage=0)).to_json()
    assert invalid["vehicleIdMethod"] is None
    assert invalid["errors"] == [
        {
            "field": "vehicle.mileage",
            "message": "must be a whole number between 1 and 250,000 (got 0)",
        }
    ]
    json.dumps(invalid)  # serializable as it is


def test_result_is_immutable() -> None:
    result = validate_lead(valid_payload())
    assert isinstance(result, ValidationResult)
    with pytest.raises(AttributeError):
        result.valid = False  # type: ignore[misc]


@pytest.mark.parametrize(
    "hostile",
    [
        {"lead": {"firstName": "a" * 1_000_000}, "vehicle": {"mileage": 10**300}},
        {"vehicle": {"mileage": float("nan"), "year": float("-inf")}},
        {"lead": [[[[[]]]]], "vehicle": {"vin": {"a": {"b": [1]}}}},
        {1: 2, None: 3, "lead": {2.5: "x"}},
    ],
)
def test_hostile_payloads_give_errors_not_exceptions(hostile: dict[Any, Any]) -> None:
    result = validate_lead(hostile)
    assert not result.valid and result.errors
    json.dumps(result.to_json())


def test_a_number_too_long_to_print_is_described_not_echoed() -> None:
    result = validate_lead(valid_payload(mileage=10**5000))
    assert [str(error) for error in result.errors] == [
        "vehicle.mileage: must be a whole number between 1 and 250,000 (got a very long number)"
    ]
