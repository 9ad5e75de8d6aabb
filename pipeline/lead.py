"""The resolved lead: what validation hands to routing and to the myKaarma mapping."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class VehicleIdMethod(StrEnum):
    """How the vehicle is identified, most accurate first."""

    VIN = "vin"
    MAKE_MODEL_YEAR = "make_model_year"
    PLATE_STATE = "plate_state"


@dataclass(frozen=True, slots=True)
class ResolvedLead:
    """A validated, normalized lead with its vehicle identification chosen.

    The vehicle fields hold every usable value (a VIN-identified lead may also carry
    the make and year decoded from the VIN); `method` says which identification wins.
    A VIN that failed its check digit is not kept here: it was set aside with a warning.
    """

    first_name: str
    last_name: str
    email: str
    state: str
    mileage: int
    method: VehicleIdMethod
    vin: str | None = None
    make: str | None = None
    model: str | None = None
    year: int | None = None
    license_plate: str | None = None
    partner: str | None = None
    transaction_id: str | None = None
    utm: dict[str, str] = field(default_factory=dict)
