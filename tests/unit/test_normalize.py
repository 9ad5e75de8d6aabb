"""Normalization before validation, UTM parsing and canonical makes."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.makes import canonical_make, known_make, make_from_manufacturer
from pipeline.normalize import clean_text, normalize, normalize_payload, parse_utm


def vehicle(**fields: Any) -> dict[str, Any]:
    section: dict[str, Any] = normalize_payload({"vehicle": fields})["vehicle"]
    return section


def lead(**fields: Any) -> dict[str, Any]:
    section: dict[str, Any] = normalize_payload({"lead": fields})["lead"]
    return section


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("  Jane  ", "Jane"),
        ("Mary   Ann\tLee", "Mary Ann Lee"),
        ("Jo\u00a0Anne", "Jo Anne"),  # no-break space
        ("Ja\u200bne", "Jane"),  # zero-width space
        ("Ja\x00ne\x07", "Jane"),  # controls
        ("\u202eenaJ", "enaJ"),  # bidi override
        ("Jose\u0301", "Jos\u00e9"),  # NFC
        ("\ud800Jane", "Jane"),  # lone surrogate
        ("a\u200db", "a\u200db"),  # zero-width joiner kept
        ("line\r\nbreak", "line break"),
        ("", ""),
    ],
)
def test_clean_text(raw: str, clean: str) -> None:
    assert clean_text(raw) == clean
    assert clean_text(clean) == clean


def test_names_are_trimmed_and_email_lower_cased() -> None:
    assert lead(firstName="  Jane ", lastName=" van  Doe", email="  Jane.Doe@Example.COM ") == {
        "firstName": "Jane",
        "lastName": "van Doe",
        "email": "jane.doe@example.com",
    }


@pytest.mark.parametrize(
    ("field", "raw", "normalized"),
    [
        ("vin", " 1hgcm82633a004352 ", "1HGCM82633A004352"),
        ("vin", "1HG-CM826 33A004352", "1HGCM82633A004352"),
        ("vin", "", None),
        ("vin", "   ", None),
        ("licensePlate", "abc-123", "ABC123"),
        ("licensePlate", " 7 ab c ", "7ABC"),
        ("licensePlate", "", None),
        ("state", " tx ", "TX"),
        ("state", "", ""),  # required: left for validation to report
        ("make", "toyota", "Toyota"),
        ("make", "  BMW ", "BMW"),
        ("make", "", None),
        ("model", " F-150 ", "F-150"),
        ("model", " ", None),
        ("year", " 2020 ", 2020),
        ("year", "2020.0", 2020),
        ("year", 2020.0, 2020),
        ("year", "", None),
        ("year", 1.5, 1.5),
        ("year", "twenty", "twenty"),
        ("year", True, True),
        ("mileage", "45,000", 45000),
        ("mileage", "45000.0", 45000),
        ("mileage", "1,234,567", 1234567),
        ("mileage", " 45000 ", 45000),
        ("mileage", "-5", -5),
        ("mileage", "45,00", "45,00"),
        ("mileage", "45 000", "45 000"),
        ("mileage", "4.5e4", "4.5e4"),
        ("mileage", "", ""),  # required: left for validation to report
        ("mileage", "9" * 400, "9" * 400),  # too long to be a number: no huge int parsing
        ("mileage", float("nan"), "nan"),
        ("mileage", float("inf"), "inf"),
        ("mileage", None, None),
    ],
)
def test_vehicle_fields(field: str, raw: object, normalized: object) -> None:
    assert vehicle(**{field: raw}) == {field: normalized}


@pytest.mark.parametrize("field", ["partner", "transactionId", "utmParameters"])
def test_empty_optional_top_level_fields_become_none(field: str) -> None:
    assert normalize_payload({field: "  "}) == {field: None}
    assert normalize_payload({field: " x  y "}) == {field: "x y"}


def test_unknown_keys_are_left_out_and_reported() -> None:
    result = normalize(
        {
            "lead": {"firstName": "Jane", "middleName": "Q"},
            "vehicle": {"color": "red", "state": "TX"},
            "extra": 1,
            "k" * 100: 2,
        }
    )
    assert result.payload == {"lead": {"firstName": "Jane"}, "vehicle": {"state": "TX"}}
    assert result.unknown_keys[:3] == ("lead.middleName", "vehicle.color", "extra")
    assert len(result.unknown_keys[3]) == 40  # long keys are cut


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ({"lead": ["a", "b"]}, {"lead": []}),
        ({"lead": "  Jane "}, {"lead": "Jane"}),
        ({"vehicle": None}, {"vehicle": None}),
        ({"vehicle": {"vin": {"deep": [1, 2]}}}, {"vehicle": {"vin": {}}}),
        ({"vehicle": {"mileage": [45000]}}, {"vehicle": {"mileage": []}}),
        ({"partner": 7}, {"partner": 7}),
    ],
)
def test_wrong_types_are_kept_shallow(raw: dict[str, Any], normalized: dict[str, Any]) -> None:
    assert normalize_payload(raw) == normalized


@pytest.mark.parametrize("raw", [[], "x", 1, None, True])
def test_non_objects_normalize_to_an_empty_payload(raw: Any) -> None:
    assert normalize_payload(raw) == {}


def test_normalization_is_idempotent_on_a_messy_payload() -> None:
    raw = {
        "lead": {"firstName": " \u202eJa\u200bne ", "lastName": "Do\te", "email": " J@X.COM "},
        "vehicle": {
            "state": " ny",
            "vin": "1hg cm82633a004352",
            "mileage": "45,000",
            "make": "mercedes benz",
            "year": "2003.0",
        },
        "utmParameters": " utm_source=a ",
    }
    once = normalize_payload(raw)
    assert once["vehicle"]["make"] == "Mercedes-Benz"
    assert normalize_payload(once) == once


@pytest.mark.parametrize(
    ("raw", "parsed"),
    [
        (
            "utm_source=partner&utm_medium=cps&utm_campaign=lead-gen",
            {"utm_source": "partner", "utm_medium": "cps", "utm_campaign": "lead-gen"},
        ),
        ("?utm_source=partner", {"utm_source": "partner"}),
        (
            "utm_campaign=spring%20sale&utm_term=a+b",
            {"utm_campaign": "spring sale", "utm_term": "a b"},
        ),
        ("https://example.com/landing?utm_source=x#top", {"utm_source": "x"}),
        ("utm_term=what?&utm_source=a", {"utm_term": "what?", "utm_source": "a"}),
        ("utm_source=a&utm_source=b", {"utm_source": "a"}),
        ("utm_source=&=x&&", {"utm_source": ""}),
        ("utm_source=%00a%ZZ", {"utm_source": "a%ZZ"}),
        ("", {}),
        ("garbage", {}),
    ],
)
def test_parse_utm(raw: str, parsed: dict[str, str]) -> None:
    assert parse_utm(raw) == parsed


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("toyota", "Toyota"),
        ("TOYOTA", "Toyota"),
        ("bmw", "BMW"),
        ("mercedes-benz", "Mercedes-Benz"),
        ("Mercedes Benz", "Mercedes-Benz"),
        ("mercedes", "Mercedes-Benz"),
        ("gmc", "GMC"),
        ("ram", "Ram"),
        ("mini", "MINI"),
        ("land rover", "Land Rover"),
        ("landrover", "Land Rover"),
        ("rolls royce", "Rolls-Royce"),
        ("mclaren", "McLaren"),
        ("chevy", "Chevrolet"),
        ("vw", "Volkswagen"),
        ("karma motors", "Karma Motors"),  # unknown, all lower case: title-cased
        ("NEWCO", "NEWCO"),  # unknown, upper case: could be an acronym, kept
        ("DeTomaso", "DeTomaso"),  # unknown, mixed case: kept
        ("123", "123"),
    ],
)
def test_canonical_make(raw: str, canonical: str) -> None:
    assert canonical_make(raw) == canonical
    assert canonical_make(canonical) == canonical


def test_known_make_is_none_for_unknown_makes() -> None:
    assert known_make("Toyota") == "Toyota"
    assert known_make("Karma Motors") is None


@pytest.mark.parametrize(
    ("manufacturer", "make"),
    [
        ("Chevrolet Mexico", "Chevrolet"),
        ("Tesla Motors USA", "Tesla"),
        ("Mercedes-Benz (Sprinter)", "Mercedes-Benz"),
        ("Fuji Heavy Industries", "Subaru"),
        ("General Motors", None),
        ("FCA", None),
    ],
)
def test_make_from_manufacturer(manufacturer: str, make: str | None) -> None:
    assert make_from_manufacturer(manufacturer) == make
