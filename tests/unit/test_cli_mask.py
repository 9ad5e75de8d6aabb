"""Masking of personal data in human-readable lists (leadpipe.cli.mask)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from leadpipe.cli.mask import (
    customer_summary,
    mask_email,
    mask_name,
    mask_payload,
    mask_phone,
    mask_plate,
    mask_vin,
    vehicle_summary,
)


@pytest.mark.parametrize(
    ("value", "masked"),
    [
        ("jane.doe@example.com", "j***@example.com"),
        ("  J@x.io ", "J***@x.io"),
        ("@example.com", "***@example.com"),
        ("a@b@example.com", "a***@example.com"),
        ("no-at-sign", "n***"),
        ("", ""),
        (None, ""),
        (42, "4***"),
    ],
)
def test_mask_email_keeps_the_first_letter_and_the_domain(value: object, masked: str) -> None:
    assert mask_email(value) == masked


@pytest.mark.parametrize(
    ("value", "masked"),
    [
        ("Jane Doe", "J*** D***"),
        ("  Mary   Ann  Smith ", "M*** A*** S***"),
        ("Ö", "Ö***"),
        ("", ""),
        (None, ""),
    ],
)
def test_mask_name_keeps_initials(value: object, masked: str) -> None:
    assert mask_name(value) == masked


@pytest.mark.parametrize(
    ("value", "masked"),
    [
        ("1HGCM82633A004352", "1HG***********352"),
        ("12345678901", "123*****901"),
        ("1234567", "*******"),
        ("", ""),
    ],
)
def test_mask_vin_keeps_the_maker_and_last_three(value: str, masked: str) -> None:
    assert mask_vin(value) == masked
    assert len(mask_vin(value)) == len(value)


@pytest.mark.parametrize(
    ("value", "masked"),
    [("ABC1234", "A*****4"), ("ABCD", "A**D"), ("AB1", "***"), ("", "")],
)
def test_mask_plate_keeps_first_and_last(value: str, masked: str) -> None:
    assert mask_plate(value) == masked


def test_mask_phone_keeps_the_last_two_digits() -> None:
    assert mask_phone("+1 (555) 123-4567") == "***67"
    assert mask_phone("none") == ""


def test_mask_payload_masks_personal_fields_at_any_depth_and_keeps_the_rest() -> None:
    payload: dict[str, Any] = {
        "lead": {"firstName": "Jane", "lastName": "Doe", "email": "jane@example.com"},
        "vehicle": {"vin": "1HGCM82633A004352", "licensePlate": "ABC1234", "mileage": 42000},
        "extra": [{"emailAddress": "x@y.z"}, "free text"],
        "transactionId": "txn-1",
    }
    masked = mask_payload(payload)
    assert masked == {
        "lead": {"firstName": "J***", "lastName": "D***", "email": "j***@example.com"},
        "vehicle": {"vin": "1HG***********352", "licensePlate": "A*****4", "mileage": 42000},
        "extra": [{"emailAddress": "x***@y.z"}, "free text"],
        "transactionId": "txn-1",
    }
    assert payload["lead"]["email"] == "jane@example.com"  # the input is not changed


@pytest.mark.parametrize(
    ("payload", "customer", "vehicle"),
    [
        (
            {
                "lead": {"firstName": "Jane", "lastName": "Doe", "email": "jane@example.com"},
                "vehicle": {"vin": "1HGCM82633A004352"},
            },
            "J*** D*** <j***@example.com>",
            "VIN 1HG***********352",
        ),
        (
            {"lead": {"email": "jane@example.com"}, "vehicle": {"make": "Toyota", "year": 2020}},
            "j***@example.com",
            "Toyota 2020",
        ),
        (
            {"lead": {"firstName": "Jane"}, "vehicle": {"licensePlate": "ABC1234", "state": "CA"}},
            "J***",
            "plate A*****4 CA",
        ),
        ({"lead": "nonsense", "vehicle": []}, "-", "-"),
        ([1, 2], "-", "-"),
        (None, "-", "-"),
    ],
)
def test_summaries_of_a_payload_as_received(payload: object, customer: str, vehicle: str) -> None:
    assert customer_summary(payload) == customer
    assert vehicle_summary(payload) == vehicle


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(json_values)
def test_masking_never_raises_and_keeps_json_shape(value: object) -> None:
    masked = mask_payload(value)
    json.dumps(masked)
    customer_summary(value)
    vehicle_summary(value)
    assert type(masked) is type(value)


@given(st.emails())
def test_a_masked_email_never_shows_more_than_one_letter_of_its_local_part(email: str) -> None:
    local, _, domain = email.rpartition("@")
    assert mask_email(email) == f"{local[:1]}***@{domain}"


@given(st.text(min_size=1))
def test_a_masked_name_keeps_one_character_per_word(name: str) -> None:
    assert mask_name(name).split() == [f"{word[0]}***" for word in name.split()]
