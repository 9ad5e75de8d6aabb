"""Key names: no lead id can reach another lead's keys (CONTRACT section 4)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from store.keys import Keys, escape_id

K = Keys()


def _per_lead(lead_id: str) -> set[str]:
    return {K.lead(lead_id), K.attempts(lead_id), K.history(lead_id), K.forgotten(lead_id)}


def test_an_id_that_looks_like_another_leads_key_gets_a_key_of_its_own() -> None:
    # `X:attempts` once collided with lead X's attempts list (issue 10)
    assert K.lead("X:attempts") != K.attempts("X")
    assert K.lead("X:history") != K.history("X")
    assert K.lead("X}:attempts") not in _per_lead("X")


def test_common_ids_stay_readable() -> None:
    assert K.lead("0b8c2f52-3f0e-4c55-9a52-3f6f1d1a2b3c") == (
        "leadpipe:lead:{0b8c2f52-3f0e-4c55-9a52-3f6f1d1a2b3c}"
    )
    assert escape_id("acme/1") == "acme%2F1"
    assert escape_id("order 7") == "order%207"
    assert escape_id("é") == "%C3%A9"


@given(st.text(min_size=1, max_size=40), st.text(min_size=1, max_size=40))
def test_distinct_ids_share_no_key(a: str, b: str) -> None:
    if a != b:
        assert not _per_lead(a) & _per_lead(b)


@given(st.text(min_size=1, max_size=60))
def test_an_escaped_id_holds_no_key_separator_or_brace(lead_id: str) -> None:
    escaped = escape_id(lead_id)
    assert not set(escaped) & set(":{}*?[] ")
    assert escaped.isascii()
