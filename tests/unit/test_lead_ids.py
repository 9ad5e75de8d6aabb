"""Which message ids can name a lead (CONTRACT section 4: any id up to 255 printable
characters), and how an unusable one is shown in a log."""

from __future__ import annotations

import pytest

from tasks.consumer import escaped_id, usable_lead_id


@pytest.mark.parametrize(
    "lead_id",
    ["X:attempts", "X", "acme/1", "order 7", "Ünïcødé 顧客 🚗", "a" * 255, "{x}", " "],
)
def test_any_printable_id_up_to_255_characters_is_usable(lead_id: str) -> None:
    assert usable_lead_id(lead_id)


@pytest.mark.parametrize(
    "lead_id", ["", "a" * 256, "line\nbreak", "tab\there", "nul\x00", "\ud800", "a\u2028b", 7, None]
)
def test_empty_long_or_control_ids_are_not(lead_id: object) -> None:
    assert not usable_lead_id(lead_id)


def test_an_unusable_id_is_logged_escaped_and_bounded() -> None:
    assert escaped_id("bad\nid\x00") == "'bad\\nid\\x00'"
    shown = escaped_id("é\x01" * 500)
    assert shown.isascii() and "(1000 characters)" in shown and len(shown) < 500
