"""Vehicle Identification Number checks: characters, check digit, make and model year.

- Legal characters: `VIN_CHARS` of `VIN_ALPHABET`, A-Z and 0-9 without I, O and Q
  (ISO 3779; both constants live in `pipeline.models`).
- Check digit (position 9, 49 CFR 565.15): every VIN for the North American market
  carries one; the world manufacturer identifier of such VINs starts with 1-5. Other
  regions may use position 9 for anything, so their VINs are not check-digit validated.
- Make: from the world manufacturer identifier (positions 1-3), decoded with `vininfo`
  and reduced to a known make (`pipeline.makes`); None when it names no known make.
- Model year: position 10 encodes the year in a 30-year cycle (A=1980 or 2010, ...,
  9=2009 or 2039), so one code stands for several years. We choose among the years a
  lead accepts (`YEAR_MIN`-`YEAR_MAX` in `pipeline.models`): when only one of them
  fits, that one; when two fit (e.g. code L: 1990 or 2020), a North American VIN
  decides by its position 7 (49 CFR 565.15: a letter means 2010 or later, a digit before 2010),
  otherwise the later year wins unless it lies after next calendar year (model years
  run at most one year ahead), then the earlier one.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from functools import lru_cache

from vininfo import Vin

from pipeline.makes import make_from_manufacturer
from pipeline.models import VIN_ALPHABET, VIN_CHARS, YEAR_MAX, YEAR_MIN

VIN_LENGTH = VIN_CHARS
#: Characters a VIN may contain (no I, O or Q: they look like 1 and 0).
VIN_CHARACTERS = frozenset(VIN_ALPHABET)
#: First characters of world manufacturer identifiers for North America (US, CA, MX).
NORTH_AMERICAN_PREFIXES = frozenset("12345")
#: Model year range a lead accepts; decoding picks the year-cycle within it.
MIN_MODEL_YEAR, MAX_MODEL_YEAR = YEAR_MIN, YEAR_MAX

_TRANSLITERATION: dict[str, int] = {
    **{str(digit): digit for digit in range(10)},
    **dict(zip("ABCDEFGH", range(1, 9), strict=True)),
    **dict(zip("JKLMN", range(1, 6), strict=True)),
    "P": 7,
    "R": 9,
    **dict(zip("STUVWXYZ", range(2, 10), strict=True)),
}
_WEIGHTS = (8, 7, 6, 5, 4, 3, 2, 10, 0, 9, 8, 7, 6, 5, 4, 3, 2)
#: Position-10 year codes in order: index + 1980 is the first year of the cycle.
_YEAR_CODES = "ABCDEFGHJKLMNPRSTVWXY123456789"
_YEAR_CYCLE = len(_YEAR_CODES)
_FIRST_CYCLE_YEAR = 1980


@dataclass(frozen=True, slots=True)
class VinCheck:
    """What a VIN tells us.

    `check_digit_ok` is None when the VIN is not checked (not North American, or its
    characters are not legal); `make` and `year` are None when they cannot be decoded.
    """

    valid_chars: bool
    check_digit_ok: bool | None
    make: str | None
    year: int | None


def has_valid_chars(vin: str) -> bool:
    """`VIN_LENGTH` characters, each of `VIN_CHARACTERS`."""
    return len(vin) == VIN_LENGTH and VIN_CHARACTERS.issuperset(vin)


def is_north_american(vin: str) -> bool:
    """The VIN was assigned for North America (first character 1-5)."""
    return vin[:1] in NORTH_AMERICAN_PREFIXES


def check_digit(vin: str) -> str | None:
    """The check digit (0-9 or X) position 9 must hold; None for an illegal VIN."""
    if not has_valid_chars(vin):
        return None
    total = sum(_TRANSLITERATION[char] * weight for char, weight in zip(vin, _WEIGHTS, strict=True))
    remainder = total % 11
    return "X" if remainder == 10 else str(remainder)


def check_digit_ok(vin: str) -> bool:
    """The VIN is legal and position 9 holds its check digit."""
    expected = check_digit(vin)
    return expected is not None and vin[8] == expected


def decode_model_year(vin: str, *, latest: int | None = None) -> int | None:
    """The model year position 10 encodes, within the accepted years (module docstring).

    `latest` is the latest plausible model year (default: next calendar year).
    """
    index = _YEAR_CODES.find(vin[9]) if len(vin) == VIN_LENGTH else -1
    if index < 0:
        return None
    candidates = [
        year
        for year in range(_FIRST_CYCLE_YEAR + index, MAX_MODEL_YEAR + 1, _YEAR_CYCLE)
        if year >= MIN_MODEL_YEAR
    ]
    if len(candidates) == 1:
        return candidates[0]
    earlier, later = candidates
    if is_north_american(vin):
        return later if vin[6].isalpha() else earlier
    if latest is None:
        latest = datetime.date.today().year + 1
    return later if later <= latest else earlier


def decode_make(vin: str) -> str | None:
    """The known make of a legal VIN's manufacturer identifier, or None."""
    return _make_of_wmi(vin[:3]) if has_valid_chars(vin) else None


@lru_cache(maxsize=4096)
def _make_of_wmi(wmi: str) -> str | None:
    # The manufacturer depends on the identifier alone: decode it once per identifier.
    manufacturer = Vin(wmi.ljust(VIN_LENGTH, "0")).manufacturer
    return make_from_manufacturer(manufacturer) if isinstance(manufacturer, str) else None


def check_vin(vin: str) -> VinCheck:
    """Check a VIN (already upper-cased, without spaces or dashes). Never raises."""
    if not has_valid_chars(vin):
        return VinCheck(valid_chars=False, check_digit_ok=None, make=None, year=None)
    return VinCheck(
        valid_chars=True,
        check_digit_ok=check_digit_ok(vin) if is_north_american(vin) else None,
        make=decode_make(vin),
        year=decode_model_year(vin),
    )
