"""The email index's keyed hash (CONTRACT section 7)."""

from __future__ import annotations

import pytest

from pipeline.privacy import address_problem, email_digest, payload_email

SECRET = b"k" * 32


def test_every_spelling_of_one_address_has_one_digest() -> None:
    spellings = ["jane.doe@example.com", " Jane.Doe@Example.COM ", "JANE.DOE@EXAMPLE.COM\t"]
    assert len({email_digest(SECRET, s) for s in spellings}) == 1


def test_the_digest_depends_on_the_secret_and_holds_no_address() -> None:
    one = email_digest(SECRET, "jane@example.com")
    assert one != email_digest(b"other", "jane@example.com")
    assert "jane" not in one and len(one) == 32


@pytest.mark.parametrize("address", ["", "   ", "no-at-sign", "a@", "@b.com", "x" * 400 + "@b.c"])
def test_malformed_addresses_are_named(address: str) -> None:
    assert address_problem(address)


def test_a_real_address_is_fine() -> None:
    assert address_problem(" Jane.Doe@Example.com ") is None


def test_the_email_of_a_payload() -> None:
    assert payload_email({"lead": {"email": " A@b.com"}}) == " A@b.com"
    assert payload_email({"lead": {"email": 5}}) is None
    assert payload_email({"email": "a@b.com"}) is None
    assert payload_email(["x"]) is None
