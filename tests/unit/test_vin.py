"""VIN checks: characters, North America, check digit, make and model year."""

from __future__ import annotations

import pytest

from pipeline.vin import (
    VinCheck,
    check_digit,
    check_digit_ok,
    check_vin,
    decode_make,
    decode_model_year,
    has_valid_chars,
    is_north_american,
)

#: Real VINs whose check digits are right.
HONDA_2003 = "1HGCM82633A004352"
CHECK_DIGIT_X = "1M8GDM9AXKP042788"


@pytest.mark.parametrize(
    ("vin", "ok"),
    [
        (HONDA_2003, True),
        (CHECK_DIGIT_X, True),
        ("1HGCM82633A00435", False),  # 16
        ("1HGCM82633A0043521", False),  # 18
        ("1HGCM82633A00435I", False),
        ("1HGCM82633A00435O", False),
        ("1HGCM82633A00435Q", False),
        ("1hgcm82633a004352", False),  # callers upper-case first
        ("", False),
    ],
)
def test_has_valid_chars(vin: str, ok: bool) -> None:
    assert has_valid_chars(vin) is ok


@pytest.mark.parametrize(
    ("vin", "north_american"),
    [
        ("1HGCM82633A004352", True),
        ("2T1BURHE0JC000000", True),
        ("3VWFE21C04M000001", True),
        ("4T1BF1FK5CU000000", True),
        ("5YJSA1E26MF123456", True),
        ("WVWZZZ1JZXW000001", False),
        ("JHMCM56557C404453", False),
        ("", False),
    ],
)
def test_is_north_american(vin: str, north_american: bool) -> None:
    assert is_north_american(vin) is north_american


def test_check_digit_of_real_vins() -> None:
    assert check_digit(HONDA_2003) == "3"
    assert check_digit(CHECK_DIGIT_X) == "X"
    assert check_digit_ok(HONDA_2003)
    assert check_digit_ok(CHECK_DIGIT_X)


@pytest.mark.parametrize("position", range(17))
def test_changing_any_weighted_character_breaks_the_check_digit(position: int) -> None:
    # Given a valid VIN, when one character other than the check digit changes
    # to one with another transliteration value, then the check fails.
    if position == 8:
        assert not check_digit_ok(HONDA_2003[:8] + "4" + HONDA_2003[9:])
        return
    original = HONDA_2003[position]
    replacement = "1" if original not in "1AJ" else "2"
    changed = HONDA_2003[:position] + replacement + HONDA_2003[position + 1 :]
    assert check_digit_ok(changed) is False


def test_check_digit_of_an_illegal_vin_is_none() -> None:
    assert check_digit("1HGCM82633A00435I") is None
    assert check_digit_ok("1HGCM82633A00435I") is False


@pytest.mark.parametrize(
    ("vin", "expected"),
    [
        (HONDA_2003, VinCheck(True, True, "Honda", 2003)),
        ("1HGCM82633A004353", VinCheck(True, False, "Honda", 2003)),
        # Not North American: position 9 is not a check digit there.
        ("WVWZZZ1JZXW000001", VinCheck(True, None, "Volkswagen", 1999)),
        ("JHMCM56557C404453", VinCheck(True, None, "Honda", 2007)),
        ("1HGCM82633A00435I", VinCheck(False, None, None, None)),
        ("SHORT", VinCheck(False, None, None, None)),
    ],
)
def test_check_vin(vin: str, expected: VinCheck) -> None:
    assert check_vin(vin) == expected


def test_decode_make_of_an_unknown_manufacturer_is_none() -> None:
    assert decode_make("9ZZZZZZZZZZZZZZZZ") is None
    assert decode_make("bad") is None


@pytest.mark.parametrize(
    ("vin", "year"),
    [
        # North American: position 7 tells the cycle apart (letter -> 2010 or later).
        ("1HGCM82633A004352", 2003),  # '3': 2003 only (2033 is out of range)
        ("1FTFW1ET5DFC10312", 2013),  # 'D': 2013 only (1983 out of range)
        ("1HGCM8263LA004352", 1990),  # 'L', position 7 a digit: 1990
        ("1HGCM8A63LA004352", 2020),  # 'L', position 7 a letter: 2020
        ("5YJSA1E26MF123456", 2021),  # 'M', position 7 a letter: 2021
        ("1M8GDM9AXKP042788", 2019),  # 'K': 1989 is out of range, 2019 only
        # Elsewhere: the later year unless it lies after `latest`.
        ("WVWZZZ1JZXW000001", 1999),  # 'X': 1999 or 2029; 2029 is after 2027
        ("WVWZZZ1JZLW000001", 2020),  # 'L': 1990 or 2020
        ("WVWZZZ1JZUW000001", None),  # 'U' is no year code
        ("WVWZZZ1JZ0W000001", None),  # nor is '0'
    ],
)
def test_decode_model_year(vin: str, year: int | None) -> None:
    assert decode_model_year(vin, latest=2027) == year


def test_decode_model_year_of_a_future_year_elsewhere_takes_the_earlier_cycle() -> None:
    assert decode_model_year("WVWZZZ1JZXW000001", latest=2030) == 2029
    assert decode_model_year("WVWZZZ1JZXW000001", latest=2028) == 1999
