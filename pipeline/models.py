"""`PartnerLeadRequest` (seed 000) as pydantic models: every rule of the seed.

The models are strict: they validate a payload *after* `pipeline.normalize`, so a
string is never a number, a bool is not a mileage and 1.5 is not a year. Fields the
seed leaves unbounded get generous bounds (the `*_MAX_CHARS` constants below) so that
hostile input cannot balloon.

The constants below are the one place for every bound: `pipeline.validation` words
its messages from them and `pipeline.vin` decodes model years within them.

Contract rules beyond the seed (a VIN's legal characters and its North American check
digit, which identification wins, enrichment from the VIN) live in
`pipeline.validation`: a VIN that fails them is set aside when another identification
is usable, so the model checks only the seed's rule, 17 characters.
"""

from __future__ import annotations

from typing import Annotated

from email_validator import EmailNotValidError, validate_email
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    StringConstraints,
    model_validator,
)
from pydantic_core import PydanticCustomError

from pipeline.us_states import US_STATE_CODES

#: Every text field needs at least one character (an empty one reads as absent).
TEXT_MIN_CHARS = 1
NAME_MAX_CHARS = 50
#: RFC 5321 limits a path to 256 octets, so 254 characters for the address itself;
#: the cap below only keeps email-validator from parsing huge strings.
EMAIL_MAX_CHARS = 320
#: A two-letter US state code.
STATE_CHARS = 2
PLATE_MAX_CHARS = 8
#: Seed: a VIN has 17 characters.
VIN_CHARS = 17
#: ISO 3779: the characters a VIN may hold, digits and letters but I, O and Q (they look
#: like 1 and 0). Checked in `pipeline.validation`, not by the model (see above).
VIN_ALPHABET = "ABCDEFGHJKLMNPRSTUVWXYZ0123456789"
YEAR_MIN, YEAR_MAX = 1990, 2030
MILEAGE_MIN, MILEAGE_MAX = 1, 250_000
#: Bounds the seed leaves open (characters).
MAKE_MODEL_MAX_CHARS = 50
PARTNER_MAX_CHARS = 100
TRANSACTION_ID_MAX_CHARS = 100
UTM_MAX_CHARS = 2000


def _check_email(value: str) -> str:
    """A syntactically valid address (no DNS or deliverability check), normalized."""
    try:
        return validate_email(value, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise PydanticCustomError("email", "{reason}", {"reason": str(exc)}) from None


def _check_state(value: str) -> str:
    if value not in US_STATE_CODES:
        raise PydanticCustomError("us_state", "not a US state code")
    return value


def _text(min_length: int, max_length: int) -> object:
    return StringConstraints(min_length=min_length, max_length=max_length)


Name = Annotated[StrictStr, _text(TEXT_MIN_CHARS, NAME_MAX_CHARS)]
Email = Annotated[StrictStr, _text(TEXT_MIN_CHARS, EMAIL_MAX_CHARS), AfterValidator(_check_email)]
State = Annotated[StrictStr, _text(STATE_CHARS, STATE_CHARS), AfterValidator(_check_state)]
Plate = Annotated[StrictStr, _text(TEXT_MIN_CHARS, PLATE_MAX_CHARS)]
MakeOrModel = Annotated[StrictStr, _text(TEXT_MIN_CHARS, MAKE_MODEL_MAX_CHARS)]
Vin = Annotated[StrictStr, _text(VIN_CHARS, VIN_CHARS)]
Year = Annotated[StrictInt, Field(ge=YEAR_MIN, le=YEAR_MAX)]
Mileage = Annotated[StrictInt, Field(ge=MILEAGE_MIN, le=MILEAGE_MAX)]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)


class LeadContactInfo(_Model):
    """Customer contact information; every field required."""

    first_name: Name = Field(alias="firstName")
    last_name: Name = Field(alias="lastName")
    email: Email = Field(alias="email")


class VehicleSearchInfo(_Model):
    """The vehicle: a VIN, or make+model+year, or licensePlate with state."""

    state: State = Field(alias="state")
    license_plate: Plate | None = Field(default=None, alias="licensePlate")
    make: MakeOrModel | None = Field(default=None, alias="make")
    model: MakeOrModel | None = Field(default=None, alias="model")
    mileage: Mileage = Field(alias="mileage")
    vin: Vin | None = Field(default=None, alias="vin")
    year: Year | None = Field(default=None, alias="year")

    @property
    def has_make_model_year(self) -> bool:
        """Make, model and year are all given."""
        return self.make is not None and self.model is not None and self.year is not None

    @model_validator(mode="after")
    def _one_identification(self) -> VehicleSearchInfo:
        if self.vin is not None or self.license_plate is not None or self.has_make_model_year:
            return self
        given = [name for name in ("make", "model", "year") if getattr(self, name) is not None]
        if given:
            missing = [name for name in ("make", "model", "year") if name not in given]
            raise PydanticCustomError(
                "vehicle_rule",
                "make, model and year must be given together (missing {missing}); "
                "or give a VIN, or licensePlate with state",
                {"missing": " and ".join(missing)},
            )
        raise PydanticCustomError(
            "vehicle_rule",
            "identify the vehicle: give a VIN, or make, model and year together, "
            "or licensePlate with state",
        )


class PartnerLeadRequest(_Model):
    """A partner's lead for vehicle protection plan quotes (seed 000)."""

    lead: LeadContactInfo = Field(alias="lead")
    vehicle: VehicleSearchInfo = Field(alias="vehicle")
    partner: Annotated[StrictStr, _text(TEXT_MIN_CHARS, PARTNER_MAX_CHARS)] | None = Field(
        default=None, alias="partner"
    )
    transaction_id: Annotated[StrictStr, _text(TEXT_MIN_CHARS, TRANSACTION_ID_MAX_CHARS)] | None = (
        Field(default=None, alias="transactionId")
    )
    utm_parameters: Annotated[StrictStr, _text(TEXT_MIN_CHARS, UTM_MAX_CHARS)] | None = Field(
        default=None, alias="utmParameters"
    )
