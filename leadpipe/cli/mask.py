"""Masking personal data for human-readable lists (`dlq list`, `dlq replay --dry-run`).

Lists are read over shoulders and pasted into tickets, so they show just enough to
recognise a lead: `j***@example.com`, `J*** D***`, `1HG***********352`, `A****3`.
`status`, `dlq show` and every `--json` output show the record in full.

Every function accepts anything (a payload is shown as received, whatever its types)
and never raises.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: What replaces the hidden part of a value.
STARS = "***"
#: Characters of a VIN kept at each end: the maker (WMI) and the last three digits.
VIN_KEEP_START = 3
VIN_KEEP_END = 3

#: Payload keys whose values are masked by `mask_payload`, and how.
_EMAIL_KEYS = frozenset({"email", "emailaddress"})
_NAME_KEYS = frozenset({"firstname", "lastname", "name", "fullname", "middlename"})
_PHONE_KEYS = frozenset({"phone", "phonenumber", "mobile", "mobilephone"})
_VIN_KEYS = frozenset({"vin"})
_PLATE_KEYS = frozenset({"licenseplate", "plate"})


def _text(value: object) -> str:
    return value.strip() if isinstance(value, str) else "" if value is None else str(value)


def mask_word(value: object) -> str:
    """First character and `***`: `Jane` -> `J***`; empty stays empty."""
    text = _text(value)
    return f"{text[0]}{STARS}" if text else ""


def mask_name(value: object) -> str:
    """Each word to its initial: `Jane Doe` -> `J*** D***`."""
    return " ".join(mask_word(word) for word in _text(value).split())


def mask_email(value: object) -> str:
    """`jane.doe@example.com` -> `j***@example.com`; the domain helps triage."""
    text = _text(value)
    local, at, domain = text.rpartition("@")
    if not at:
        return mask_word(text)
    return f"{mask_word(local) or STARS}@{domain}"


def mask_vin(value: object) -> str:
    """Maker and last three characters kept, the rest starred, same length."""
    text = _text(value)
    hidden = len(text) - VIN_KEEP_START - VIN_KEEP_END
    if hidden < 4:
        return "*" * len(text)
    return text[:VIN_KEEP_START] + "*" * hidden + text[-VIN_KEEP_END:]


def mask_plate(value: object) -> str:
    """First and last character kept: `ABC1234` -> `A*****4`; short plates all starred."""
    text = _text(value)
    if len(text) <= 3:
        return "*" * len(text)
    return text[0] + "*" * (len(text) - 2) + text[-1]


def mask_phone(value: object) -> str:
    """Only the last two digits: `555-123-4567` -> `***67`."""
    digits = [c for c in _text(value) if c.isdigit()]
    return STARS + "".join(digits[-2:]) if digits else ""


def _mask_value(key: str, value: Any) -> Any:
    name = key.lower()
    if isinstance(value, Mapping | list):
        return mask_payload(value)
    if value is None:
        return None
    if name in _EMAIL_KEYS:
        return mask_email(value)
    if name in _NAME_KEYS:
        return mask_name(value)
    if name in _PHONE_KEYS:
        return mask_phone(value)
    if name in _VIN_KEYS:
        return mask_vin(value)
    if name in _PLATE_KEYS:
        return mask_plate(value)
    return value


def mask_payload(value: Any) -> Any:
    """A copy of a payload (or any JSON value) with personal fields masked at any depth."""
    if isinstance(value, Mapping):
        return {str(k): _mask_value(str(k), v) for k, v in value.items()}
    if isinstance(value, list):
        return [mask_payload(item) for item in value]
    return value


def _section(payload: object, name: str) -> Mapping[str, Any]:
    section = payload.get(name) if isinstance(payload, Mapping) else None
    return section if isinstance(section, Mapping) else {}


def customer_summary(payload: object) -> str:
    """`J*** D*** <j***@example.com>` from a PartnerLeadRequest, or `-`."""
    lead = _section(payload, "lead")
    name = " ".join(
        p for p in (mask_name(lead.get("firstName")), mask_name(lead.get("lastName"))) if p
    )
    email = mask_email(lead.get("email")) if lead.get("email") else ""
    if name and email:
        return f"{name} <{email}>"
    return name or email or "-"


def vehicle_summary(payload: object) -> str:
    """How the vehicle is identified, masked: `VIN 1HG***********352`, `TOYOTA Camry
    2020` (not personal), or `plate A****3 CA`; `-` when there is nothing."""
    vehicle = _section(payload, "vehicle")
    if vehicle.get("vin"):
        return f"VIN {mask_vin(vehicle['vin'])}"
    model = " ".join(_text(vehicle.get(k)) for k in ("make", "model", "year") if vehicle.get(k))
    if model:
        return model
    if vehicle.get("licensePlate"):
        state = _text(vehicle.get("state"))
        return f"plate {mask_plate(vehicle['licensePlate'])} {state}".rstrip()
    return "-"
