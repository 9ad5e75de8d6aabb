"""The routing file's `[dealers."<uuid>"]` tables: max_per_second (CONTRACT section 8)."""

from __future__ import annotations

import pytest

from pipeline.errors import RoutingFileError
from pipeline.routing import parse_routing

BASE = """
[defaults]
dealer_uuid = "d-0001"

[partners.acme]
dealer_uuid = "d-0002"
"""


def test_rates_are_read_and_every_named_dealer_is_known() -> None:
    table = parse_routing(
        BASE
        + """
[dealers."d-0002"]
max_per_second = 5.0

[dealers."d-other"]
max_per_second = 4
"""
    )
    assert table.dealer_rates == {"d-0002": 5.0, "d-other": 4.0}
    assert table.dealer_uuids == {"d-0001", "d-0002", "d-other"}


def test_a_dealer_table_without_a_rate_sets_none() -> None:
    table = parse_routing(BASE + '\n[dealers."d-0002"]\n')
    assert table.dealer_rates == {}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0", "dealers.d-0002.max_per_second: must be a number of deliveries per second above 0"),
        ("-1.5", "above 0, got a float -1.5"),
        ("nan", "above 0"),
        ('"fast"', "dealers.d-0002.max_per_second"),
        ("true", "dealers.d-0002.max_per_second"),
    ],
)
def test_a_bad_rate_names_the_key(value: str, expected: str) -> None:
    with pytest.raises(RoutingFileError, match="invalid routing file") as caught:
        parse_routing(BASE + f'\n[dealers."d-0002"]\nmax_per_second = {value}\n')
    assert expected in str(caught.value)


def test_an_unknown_dealer_key_is_refused() -> None:
    with pytest.raises(RoutingFileError, match=r"dealers\.d-0002\.max_rate: unknown key"):
        parse_routing(BASE + '\n[dealers."d-0002"]\nmax_rate = 3\n')
