"""Normalization of a partner payload, before validation.

`normalize_payload` cleans what partners commonly get slightly wrong, so that
validation judges the data rather than its formatting:

- every string: control and invisible format characters removed (zero-width joiners
  kept: some scripts need them), Unicode NFC, whitespace trimmed and runs collapsed
  to one space;
- `lead.email` lower-cased; `vehicle.state` upper-cased; `vehicle.vin` and
  `vehicle.licensePlate` upper-cased without spaces and dashes;
- `vehicle.make` in its canonical case (`pipeline.makes`);
- `vehicle.year` and `vehicle.mileage`: numeric strings ("45,000", " 2020 ",
  "45000.0") and whole floats (2020.0) become ints; anything else is left for
  validation to report;
- empty strings of optional fields become None.

Only the keys of `PartnerLeadRequest` are kept; `normalize` also reports the others.
A value of the wrong JSON type is kept when it is a scalar and replaced by an empty
container of its own type otherwise, so that validation still names its type while
hostile nesting never travels further. Normalization never raises and is idempotent:
`normalize_payload(normalize_payload(x)) == normalize_payload(x)`.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from pipeline.makes import canonical_make

#: At most this many unknown keys are named one by one in the report.
MAX_REPORTED_UNKNOWN_KEYS = 20
#: Unknown keys are cut to this length in the report.
MAX_REPORTED_KEY_CHARS = 40

_ZERO_WIDTH_JOINERS = frozenset("\u200c\u200d")
#: Unicode categories removed from strings: controls, format characters, surrogates.
_REMOVED_CATEGORIES = frozenset({"Cc", "Cf", "Cs"})
_NUMBER = re.compile(r"[+-]?(?:\d{1,3}(?:,\d{3})+|\d{1,15})(?:\.0*)?", re.ASCII)
_SPACES_AND_DASHES = re.compile(r"[\s\-\u2010-\u2015\u2212]+")


def clean_text(value: str) -> str:
    """Controls and invisible format characters removed, NFC, whitespace collapsed."""
    if value.isascii() and value.isprintable():
        return " ".join(value.split()) if "  " in value or value != value.strip() else value
    kept = "".join(
        " " if char.isspace() else char
        for char in value
        if char.isspace()
        or char in _ZERO_WIDTH_JOINERS
        or unicodedata.category(char) not in _REMOVED_CATEGORIES
    )
    return " ".join(unicodedata.normalize("NFC", kept).split())


def _text(value: object) -> object:
    return clean_text(value) if isinstance(value, str) else value


def _optional(value: object) -> object:
    """A cleaned string, None when empty."""
    return (clean_text(value) or None) if isinstance(value, str) else value


def _upper(value: object) -> object:
    return unicodedata.normalize("NFC", value.upper()) if isinstance(value, str) else value


def _email(value: object) -> object:
    if not isinstance(value, str):
        return value
    return unicodedata.normalize("NFC", clean_text(value).lower())


def _state(value: object) -> object:
    return _upper(_text(value))


def _compact_upper(value: object) -> object:
    """VIN and plate: upper case, no spaces or dashes, None when empty."""
    if not isinstance(value, str):
        return value
    compact = _SPACES_AND_DASHES.sub("", clean_text(value))
    return _upper(compact) or None


def _make(value: object) -> object:
    value = _optional(value)
    return canonical_make(value) if isinstance(value, str) else value


def _integer(value: object, *, optional: bool) -> object:
    """Numeric strings and whole floats as ints; anything else unchanged."""
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return int(value) if value.is_integer() else value
    if not isinstance(value, str):
        return value
    text = clean_text(value)
    if optional and not text:
        return None
    if _NUMBER.fullmatch(text):
        return int(text.partition(".")[0].replace(",", ""))
    return text


def _year(value: object) -> object:
    return _integer(value, optional=True)


def _mileage(value: object) -> object:
    return _integer(value, optional=False)


def _scalar_or_empty(value: object) -> object:
    """A scalar as it is (strings cleaned, non-finite floats as text), containers empty."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    return [] if isinstance(value, list | tuple) else {}


_Normalizer = Callable[[object], object]

LEAD_FIELDS: dict[str, _Normalizer] = {
    "firstName": _text,
    "lastName": _text,
    "email": _email,
}
VEHICLE_FIELDS: dict[str, _Normalizer] = {
    "state": _state,
    "licensePlate": _compact_upper,
    "make": _make,
    "model": _optional,
    "mileage": _mileage,
    "vin": _compact_upper,
    "year": _year,
}
TOP_FIELDS: dict[str, _Normalizer] = {
    "partner": _optional,
    "transactionId": _optional,
    "utmParameters": _optional,
}
SECTIONS: dict[str, dict[str, _Normalizer]] = {"lead": LEAD_FIELDS, "vehicle": VEHICLE_FIELDS}


@dataclass(frozen=True, slots=True)
class Normalized:
    """A normalized payload and the unknown keys left out of it (dotted paths)."""

    payload: dict[str, Any]
    unknown_keys: tuple[str, ...]


def _field(normalizer: _Normalizer, value: object) -> object:
    if isinstance(value, dict | list | tuple):
        return _scalar_or_empty(value)
    return _scalar_or_empty(normalizer(value))


def _key_path(prefix: str, key: object) -> str:
    name = key if isinstance(key, str) else repr(key)
    name = clean_text(name)
    if len(name) > MAX_REPORTED_KEY_CHARS:
        name = name[: MAX_REPORTED_KEY_CHARS - 1] + "…"
    return f"{prefix}{name}"


def _section(
    raw: dict[Any, Any], fields: dict[str, _Normalizer], prefix: str, unknown: list[str]
) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in raw.items():
        normalizer = fields.get(key) if isinstance(key, str) else None
        if normalizer is None:
            unknown.append(_key_path(prefix, key))
        else:
            result[key] = _field(normalizer, value)
    return result


def normalize(raw: object) -> Normalized:
    """Normalize `raw` and report its unknown keys; anything not a dict gives `{}`."""
    if not isinstance(raw, dict):
        return Normalized(payload={}, unknown_keys=())
    unknown: list[str] = []
    result: dict[str, Any] = {}
    for key, value in raw.items():
        section = SECTIONS.get(key) if isinstance(key, str) else None
        if section is not None:
            result[key] = (
                _section(value, section, f"{key}.", unknown)
                if isinstance(value, dict)
                else _scalar_or_empty(value)
            )
        elif isinstance(key, str) and key in TOP_FIELDS:
            result[key] = _field(TOP_FIELDS[key], value)
        else:
            unknown.append(_key_path("", key))
    return Normalized(payload=result, unknown_keys=tuple(unknown))


def normalize_payload(raw: dict[str, Any]) -> dict[str, Any]:
    """The normalized payload (see the module docstring). Never raises; idempotent."""
    return normalize(raw).payload


def parse_utm(value: str) -> dict[str, str]:
    """UTM parameters from their query-string form, url-decoded.

    Tolerates a leading "?" (or a whole URL: only its query is read) and a trailing
    "#fragment". The first occurrence of a key wins; pieces without "=" and empty keys
    are skipped.
    """
    query = value.strip()
    before, mark, after = query.partition("?")
    if mark and "=" not in before:
        query = after
    query = "&".join(pair for pair in query.split("#", 1)[0].split("&") if "=" in pair)
    result: dict[str, str] = {}
    for key, item in parse_qsl(query, keep_blank_values=True):
        name = clean_text(key)
        if name and name not in result:
            result[name] = clean_text(item)
    return result
