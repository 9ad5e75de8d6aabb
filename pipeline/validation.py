"""The one entry point for checking a partner lead: `validate_lead`.

Normalize (`pipeline.normalize`), validate every rule of seed 000
(`pipeline.models`), then the contract's own rules:

- identification: VIN, else make+model+year, else licensePlate+state;
- a VIN must hold only legal characters (no I, O or Q) and, when North American, pass
  its check digit: when another identification is usable a VIN that fails either is
  set aside with a warning, otherwise the lead is invalid (the most accurate *usable*
  method wins);
- enrichment: a usable VIN fills make and year when they are absent; a VIN year that
  contradicts the given year is a warning (the given year is kept). A make that differs
  from the VIN's is not flagged: manufacturer codes name the maker, not the brand (many
  Ram trucks carry Dodge codes), so such warnings would mostly be false alarms.

All errors are collected, one message per failing field, with dotted paths. Rules
are worded from the bounds in `pipeline.models`, never restated here. Messages
echo at most `MAX_ECHO_CHARS` characters of a value and never echo an email or a name.
`validate_lead` never raises, whatever it is given.
"""

from __future__ import annotations

import json
import string
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from pipeline.lead import ResolvedLead, VehicleIdMethod
from pipeline.models import (
    MAKE_MODEL_MAX_CHARS,
    MILEAGE_MAX,
    MILEAGE_MIN,
    NAME_MAX_CHARS,
    PARTNER_MAX_CHARS,
    PLATE_MAX_CHARS,
    TEXT_MIN_CHARS,
    TRANSACTION_ID_MAX_CHARS,
    UTM_MAX_CHARS,
    VIN_ALPHABET,
    VIN_CHARS,
    YEAR_MAX,
    YEAR_MIN,
    PartnerLeadRequest,
    VehicleSearchInfo,
)
from pipeline.normalize import MAX_REPORTED_UNKNOWN_KEYS, clean_text, normalize, parse_utm
from pipeline.vin import VIN_CHARACTERS, VinCheck, check_vin

#: Values quoted in messages are cut to this many characters.
MAX_ECHO_CHARS = 40

_LENGTH_ERRORS = frozenset({"string_too_short", "string_too_long"})
_RANGE_ERRORS = frozenset({"greater_than_equal", "less_than_equal"})
_TYPE_ERRORS = frozenset(
    {"string_type", "int_type", "model_type", "model_attributes_type", "dict_type"}
)
#: Fields whose values may be quoted in messages (no personal data).
_ECHOED = frozenset(
    {"vehicle.state", "vehicle.vin", "vehicle.year", "vehicle.mileage", "vehicle.licensePlate"}
)
_INT_FIELDS = frozenset({"vehicle.year", "vehicle.mileage"})
_OBJECT_FIELDS = frozenset({"lead", "vehicle"})


def _chars(most: int, least: int = TEXT_MIN_CHARS) -> str:
    return f"must be {least} to {most} characters"


def _whole_number(least: int, most: int) -> str:
    return f"must be a whole number between {least:,} and {most:,}"


def _spoken(items: list[str]) -> str:
    """`["I", "O", "Q"]` -> `"I, O and Q"`."""
    return ", ".join(items[:-1]) + " and " + items[-1] if len(items) > 1 else "".join(items)


_RULES: dict[str, str] = {
    "lead": "must be an object with firstName, lastName and email",
    "vehicle": "must be an object with state, mileage and the vehicle's identification",
    "lead.firstName": _chars(NAME_MAX_CHARS),
    "lead.lastName": _chars(NAME_MAX_CHARS),
    "lead.email": "must be a valid email address",
    "vehicle.state": "must be a two-letter US state code such as NY, CA or TX",
    "vehicle.licensePlate": _chars(PLATE_MAX_CHARS),
    "vehicle.make": _chars(MAKE_MODEL_MAX_CHARS),
    "vehicle.model": _chars(MAKE_MODEL_MAX_CHARS),
    "vehicle.mileage": _whole_number(MILEAGE_MIN, MILEAGE_MAX),
    "vehicle.vin": f"must be exactly {VIN_CHARS} characters",
    "vehicle.year": f"must be a whole number between {YEAR_MIN} and {YEAR_MAX}",
    "partner": _chars(PARTNER_MAX_CHARS),
    "transactionId": _chars(TRANSACTION_ID_MAX_CHARS),
    "utmParameters": _chars(UTM_MAX_CHARS),
}
#: The letters ISO 3779 leaves out of `VIN_ALPHABET`: "I, O and Q".
_VIN_EXCLUDED = _spoken(sorted(set(string.ascii_uppercase) - set(VIN_ALPHABET)))
_VIN_CHARACTERS_RULE = f"may contain only digits and letters other than {_VIN_EXCLUDED}"


@dataclass(frozen=True, slots=True)
class FieldError:
    """One failing field: `field` is a dotted path ("vehicle.vin", "payload")."""

    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"

    def to_json(self) -> dict[str, str]:
        """`{"field": ..., "message": ...}`."""
        return {"field": self.field, "message": self.message}


@dataclass(frozen=True, slots=True)
class ValidationResult:
    """The verdict on one lead; `lead` is set exactly when it is valid."""

    valid: bool
    method: VehicleIdMethod | None
    normalized: dict[str, Any]
    errors: tuple[FieldError, ...]
    warnings: tuple[str, ...]
    lead: ResolvedLead | None

    def to_json(self) -> dict[str, Any]:
        """The contract's shape: valid, vehicleIdMethod, normalized, errors, warnings."""
        return {
            "valid": self.valid,
            "vehicleIdMethod": self.method.value if self.method is not None else None,
            "normalized": self.normalized,
            "errors": [error.to_json() for error in self.errors],
            "warnings": list(self.warnings),
        }


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    return "object"


def _echo(value: object) -> str:
    """A short JSON rendering of a scalar, or its JSON type."""
    if not isinstance(value, str | int | float | bool) and value is not None:
        return _json_type(value)
    try:
        text = json.dumps(value, ensure_ascii=False)
    except ValueError:  # an int too long to print
        return "a very long number"
    if len(text) > MAX_ECHO_CHARS:
        text = text[: MAX_ECHO_CHARS - 1] + "…"
    return text


def _got(path: str, value: object) -> str:
    if isinstance(value, str) and path not in _ECHOED:
        return f"got {len(value)} characters"
    if path in _ECHOED or (path in _INT_FIELDS and not isinstance(value, dict | list)):
        return f"got {_echo(value)}"
    return f"got {_json_type(value)}"


def _message(path: str, error: ErrorDetails) -> str:
    kind, value = error["type"], error.get("input")
    rule = _RULES.get(path, error["msg"])
    if kind == "missing" or (kind in _TYPE_ERRORS and value is None):
        return "is required"
    if kind in _TYPE_ERRORS:
        if path in _OBJECT_FIELDS:
            return f"{rule} (got {_json_type(value)})"
        if path in _INT_FIELDS:
            return f"{rule} (got {_echo(value)})"
        return f"must be a string (got {_json_type(value)})"
    if kind == "email":
        # email-validator explains in a sentence; drop its parenthesised details,
        # which may quote part of the address.
        reason = str(error.get("ctx", {}).get("reason", "")).split(" (", 1)[0][:120]
        reason = reason.rstrip(".")
        return f"{rule} ({reason[:1].lower()}{reason[1:]})" if reason else rule
    if kind == "vehicle_rule":
        return error["msg"]
    if kind in _LENGTH_ERRORS or kind in _RANGE_ERRORS or kind == "us_state":
        if kind in _LENGTH_ERRORS and path == "vehicle.vin" and isinstance(value, str):
            return f"{rule} (got {len(value)})"
        return f"{rule} ({_got(path, value)})"
    return rule


def _field_errors(exc: ValidationError) -> list[FieldError]:
    """One error per path, in pydantic's order (the order of the payload's fields)."""
    seen: dict[str, FieldError] = {}
    for error in exc.errors(include_url=False):
        path = ".".join(str(part) for part in error["loc"]) or "payload"
        if path not in seen:
            seen[path] = FieldError(path, _message(path, error))
    return list(seen.values())


def _unknown_key_warnings(keys: tuple[str, ...]) -> list[str]:
    warnings = [f"ignored unknown key {key}" for key in keys[:MAX_REPORTED_UNKNOWN_KEYS]]
    if len(keys) > MAX_REPORTED_UNKNOWN_KEYS:
        warnings.append(f"ignored {len(keys) - MAX_REPORTED_UNKNOWN_KEYS} more unknown keys")
    return warnings


def _apply_partner(normalized: dict[str, Any], partner: str | None, warnings: list[str]) -> None:
    """The authenticated partner fills payload.partner, and wins over a different one."""
    authenticated = clean_text(partner) if isinstance(partner, str) else None
    if not authenticated:
        return
    given = normalized.get("partner")
    if given is not None and given != authenticated:
        warnings.append(
            f"partner {_echo(given)} in the payload replaced by the authenticated "
            f"partner {_echo(authenticated)}"
        )
    normalized["partner"] = authenticated


@dataclass(frozen=True, slots=True)
class _Vehicle:
    """The vehicle's identification and enriched fields, or the error that stops it."""

    method: VehicleIdMethod | None
    vin: str | None
    make: str | None
    year: int | None
    error: FieldError | None


def _unusable_vin(vin: str, check: VinCheck) -> tuple[str, str] | None:
    """Why a VIN of the right length cannot identify the vehicle, or None when it can.

    Returns (the error when the VIN is the only identification, the warning's reason
    when another one is usable).
    """
    if not check.valid_chars:
        found = _echo("".join(sorted(set(vin) - VIN_CHARACTERS)))
        return f"{_VIN_CHARACTERS_RULE} (found {found})", f"holds {found}, which no VIN may"
    if check.check_digit_ok is False:
        reason = "fails its check digit (position 9)"
        return f"{reason}: check the VIN for a typo", reason
    return None


def _resolve_vehicle(vehicle: VehicleSearchInfo, warnings: list[str]) -> _Vehicle:
    make, year = vehicle.make, vehicle.year
    fallback = (
        VehicleIdMethod.MAKE_MODEL_YEAR
        if vehicle.has_make_model_year
        else VehicleIdMethod.PLATE_STATE
        if vehicle.license_plate is not None
        else None
    )
    if vehicle.vin is None:
        return _Vehicle(fallback, None, make, year, None)
    check = check_vin(vehicle.vin)
    unusable = _unusable_vin(vehicle.vin, check)
    if unusable is not None:
        error, reason = unusable
        if fallback is None:
            return _Vehicle(None, None, make, year, FieldError("vehicle.vin", error))
        warnings.append(f"vehicle.vin {reason}: set aside, vehicle identified by {fallback.value}")
        return _Vehicle(fallback, None, make, year, None)
    if year is not None and check.year is not None and year != check.year:
        warnings.append(
            f"vehicle.year {year} differs from the VIN's model year {check.year}; kept {year}"
        )
    return _Vehicle(
        VehicleIdMethod.VIN,
        vehicle.vin,
        make if make is not None else check.make,
        year if year is not None else check.year,
        None,
    )


def _invalid(
    normalized: dict[str, Any], errors: list[FieldError], warnings: list[str]
) -> ValidationResult:
    return ValidationResult(False, None, normalized, tuple(errors), tuple(warnings), None)


def validate_lead(raw: object, *, partner: str | None = None) -> ValidationResult:
    """Normalize and validate one payload; never raises (see the module docstring)."""
    if not isinstance(raw, dict):
        error = FieldError("payload", f"must be a JSON object (got {_json_type(raw)})")
        return _invalid({}, [error], [])
    normalized_payload = normalize(raw)
    normalized = normalized_payload.payload
    warnings = _unknown_key_warnings(normalized_payload.unknown_keys)
    _apply_partner(normalized, partner, warnings)

    errors: list[FieldError] = []
    request: PartnerLeadRequest | None = None
    vehicle: VehicleSearchInfo | None = None
    try:
        request = PartnerLeadRequest.model_validate(normalized)
        vehicle = request.vehicle
    except ValidationError as exc:
        errors = _field_errors(exc)
        if not any(e.field == "vehicle" or e.field.startswith("vehicle.") for e in errors):
            # The vehicle is valid on its own: its identification may still fail.
            vehicle = VehicleSearchInfo.model_validate(normalized["vehicle"])

    resolved = _resolve_vehicle(vehicle, warnings) if vehicle is not None else None
    if resolved is not None and resolved.error is not None:
        errors.append(resolved.error)
    if request is None or resolved is None or resolved.method is None or errors:
        return _invalid(normalized, errors, warnings)

    lead = ResolvedLead(
        first_name=request.lead.first_name,
        last_name=request.lead.last_name,
        email=request.lead.email,
        state=request.vehicle.state,
        mileage=request.vehicle.mileage,
        method=resolved.method,
        vin=resolved.vin,
        make=resolved.make,
        model=request.vehicle.model,
        year=resolved.year,
        license_plate=request.vehicle.license_plate,
        partner=request.partner,
        transaction_id=request.transaction_id,
        utm=parse_utm(request.utm_parameters) if request.utm_parameters else {},
    )
    return ValidationResult(True, resolved.method, normalized, (), tuple(warnings), lead)
