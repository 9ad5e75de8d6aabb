"""myKaarma's "Insert leads" API as pydantic models: the request we send, the envelope we get.

The request models follow myKaarma's fuller published schema (see MYKAARMA.md): strict
(no type coercion, so a year sent as an int instead of a string fails) and
`extra="forbid"` (a misspelt key fails instead of being dropped by myKaarma). They are
used to check what `pipeline.mapping` builds, in tests and in `leadpipe validate`,
not on every delivery.

The response envelope is the opposite: lenient. Unknown keys are ignored and a value
of an unexpected type reads as absent, because a surprise in myKaarma's answer must
never turn a delivered lead into a failure.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    field_validator,
)
from pydantic.alias_generators import to_camel

Source = Literal["MMC", "BMW_SPARC", "AUTOPOINT"]
LeadType = Literal["RECALL", "SERVICE_DEMAND"]
AddressType = Literal["COMMON", "PRIMARY", "BILLING", "OTHER"]
NonEmpty = Annotated[str, StringConstraints(min_length=1)]
IsoDate = Annotated[str, StringConstraints(pattern=r"^\d{4}-\d{2}-\d{2}$")]


class _Request(BaseModel):
    """Base of the request models: camelCase on the wire, strict, no unknown keys."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        extra="forbid",
        strict=True,
        frozen=True,
    )


class Email(_Request):
    email_address: NonEmpty
    label: str | None = None
    ok_to_email: bool | None = None
    is_preferred: bool | None = None


class PhoneNumber(_Request):
    phone_number: NonEmpty
    label: str | None = None
    ok_to_call: bool | None = None
    ok_to_text: bool | None = None
    is_preferred: bool | None = None


class Address(_Request):
    line1: str | None = None
    line2: str | None = None
    city: str | None = None
    zip: str | None = None
    state: str | None = None
    country: str | None = None
    type: AddressType | None = None
    is_valid: bool | None = None
    is_preferred: bool | None = None


class Customer(_Request):
    """Either `uuid` (a customer myKaarma knows) or the customer itself."""

    uuid: str | None = None
    customer_key: str | None = None
    first_name: str | None = None
    middle_name: str | None = None
    last_name: str | None = None
    company: str | None = None
    is_business: bool | None = None
    addresses: list[Address] | None = None
    preferred_locale: str | None = None
    emails: list[Email] | None = None
    phone_numbers: list[PhoneNumber] | None = None


class Vehicle(_Request):
    """Either `uuid` (a vehicle myKaarma knows) or the vehicle itself; year, mileage: strings."""

    uuid: str | None = None
    vin: str | None = None
    vehicle_year: str | None = None
    vehicle_make: str | None = None
    vehicle_model: str | None = None
    vehicle_trim: str | None = None
    license_plate: str | None = None
    estimated_mileage: str | None = None
    color: str | None = None
    vehicle_engine: str | None = None
    vehicle_key: str | None = None
    tracking_id: str | None = None
    topic: str | None = None
    description: str | None = None


class DealerDetails(_Request):
    """The vendor's name and code for the dealership, and myKaarma's source (required)."""

    name: str | None = None
    code: str | None = None
    source: Source


class ServiceItem(_Request):
    code: NonEmpty
    name: str | None = None
    type: str | None = None
    due_date: IsoDate | None = None


class Campaign(_Request):
    name: str | None = None
    code: str | None = None


class MyKaarmaLeadRequest(_Request):
    """The body of `POST /leads/v2/dealer/{dealerUuid}`."""

    customer: Customer | None = None
    vehicle: Vehicle | None = None
    dealer_details: DealerDetails
    services: Annotated[list[ServiceItem], Field(min_length=1)]
    campaign: Campaign | None = None
    status: Literal["NEW"]
    last_contact_date: str | None = None
    lead_id: str | None = None
    web_id: str | None = None
    lead_type: LeadType | None = None


# --- response ---------------------------------------------------------------------------


class _Lenient(BaseModel):
    """Base of the response models: unknown keys ignored, a mistyped value reads as absent."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    @field_validator("*", mode="wrap")
    @classmethod
    def _absent_when_mistyped(
        cls, value: Any, handler: ValidatorFunctionWrapHandler, info: ValidationInfo
    ) -> Any:
        try:
            return handler(value)
        except ValidationError:
            if info.field_name is None:  # pragma: no cover - always set for field validators
                raise
            return cls.model_fields[info.field_name].get_default(call_default_factory=True)


class MyKaarmaMessage(_Lenient):
    """`error` and each of `warnings`: `{code, description, metadata}`; other keys kept."""

    model_config = ConfigDict(extra="allow", coerce_numbers_to_str=True)

    code: str | None = None
    description: str | None = None
    metadata: dict[str, Any] | None = None


class MyKaarmaResponse(_Lenient):
    """The envelope of every answer that has a body."""

    status_code: int | None = None
    error: MyKaarmaMessage | None = None
    warnings: list[MyKaarmaMessage] = Field(default_factory=list)
    is_new_created: bool | None = None
    prospect_uuid: str | None = None

    @field_validator("warnings", mode="before")
    @classmethod
    def _objects_only(cls, value: Any) -> Any:
        """One malformed warning must not hide the others."""
        if isinstance(value, list):
            return [item for item in value if isinstance(item, dict)]
        return value
