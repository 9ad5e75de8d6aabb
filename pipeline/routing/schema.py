"""The routing file's schema: pydantic models of the TOML, and its build into a table.

    RoutingDocument                     the whole file; no other top-level key
    ├── defaults: DefaultsSection       [defaults]
    ├── partners: {id: PartnerSection}  [partners.<id>]
    ├── states: {XX: StateSection}      [states.<XX>], a US state code in any case
    └── dealers: {uuid: DealerSection}  [dealers."<uuid>"]: max_per_second

Every section is a `RouteKeys` (dealer_uuid, dealer_name, dealer_code, source,
lead_type, services), the keys a `Route` is merged from. A new kind of table
(`[dealers."<uuid>"]`) is one more field of `RoutingDocument`; a key that belongs to
one kind of section only (a partner's `webhook`) is a field of that subclass, and it
never leaks into the merge, which reads `ROUTE_KEYS` only.

Models are strict and `extra="forbid"`, so a misspelt key or a wrong type is an
error, never silently ignored. Every problem of the file is reported at once, each
prefixed by its dotted key (`partners.acme.lead_type: must be one of ...`). A section
that names no dealer (none here nor in `[defaults]`) is *not* a problem: it reads
fine, and its leads end `unroutable` (CONTRACT section 5); the table lists it in
`warnings`. Only what cannot be read is refused.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from datetime import date
from typing import Annotated, Any, Final

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
)
from pydantic_core import PydanticCustomError

from pipeline.errors import RoutingFileError
from pipeline.mykaarma import LeadType, Source
from pipeline.routing.problems import describe, got, table_key
from pipeline.routing.table import (
    DEFAULT_LEAD_TYPE,
    DEFAULT_SERVICES,
    DEFAULT_SOURCE,
    Route,
    RoutingTable,
    Service,
)
from pipeline.us_states import US_STATE_CODES
from pipeline.webhooks import WebhookConfigError, WebhookTarget, target_from

_STATE_NAME = re.compile(r"[A-Za-z]{2}")
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


# --- field types ------------------------------------------------------------------------


def _non_blank(value: str) -> str:
    if not value.strip():
        raise PydanticCustomError(
            "routing_blank", "must be a non-empty string, got {got}", got(value)
        )
    return value


def _iso_date(value: object) -> object:
    """A TOML local date (`due_date = 2025-01-31`) or a "yyyy-mm-dd" string, as text."""
    if type(value) is date:
        return value.isoformat()
    if isinstance(value, str) and _ISO_DATE.fullmatch(value):
        try:
            date.fromisoformat(value)
        except ValueError:
            pass
        else:
            return value
    raise PydanticCustomError(
        "routing_iso_date", "must be a date as yyyy-mm-dd, got {got}", got(value)
    )


def _state_code(name: str) -> str:
    if not _STATE_NAME.fullmatch(name):
        raise PydanticCustomError(
            "routing_state_name", "a state section must be named by a two-letter state code"
        )
    code = name.upper()
    if code not in US_STATE_CODES:
        raise PydanticCustomError(
            "routing_us_state",
            "{code} is not a US state code, so no lead would match it",
            {"code": code},
        )
    return code


def _positive_rate(value: float) -> float:
    if not (math.isfinite(value) and value > 0):
        raise PydanticCustomError(
            "routing_rate",
            "must be a number of deliveries per second above 0, got {got}",
            got(value),
        )
    return value


def _some_services(services: list[ServiceSpec]) -> list[ServiceSpec]:
    if not services:
        raise PydanticCustomError(
            "routing_no_services", "must list at least one service (myKaarma requires one)"
        )
    return services


NonEmpty = Annotated[str, AfterValidator(_non_blank)]
IsoDate = Annotated[str, BeforeValidator(_iso_date)]
StateCode = Annotated[str, AfterValidator(_state_code)]


# --- models -----------------------------------------------------------------------------


class _Strict(BaseModel):
    """Base of the schema: no unknown keys, no type coercion."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class ServiceSpec(_Strict):
    """One entry of `services = [{ code = "VSC", name = "..." }]`."""

    code: NonEmpty
    name: NonEmpty | None = None
    type: NonEmpty | None = None
    due_date: IsoDate | None = None


class RouteKeys(_Strict):
    """The keys any section may set; a route merges them with `[defaults]`."""

    dealer_uuid: NonEmpty | None = None
    dealer_name: NonEmpty | None = None
    dealer_code: NonEmpty | None = None
    source: Source | None = None
    lead_type: LeadType | None = None
    services: Annotated[list[ServiceSpec], AfterValidator(_some_services)] | None = None


#: The keys merged into a `Route`; keys a subclass adds are not among them.
ROUTE_KEYS: Final = tuple(RouteKeys.model_fields)


class DefaultsSection(RouteKeys):
    """`[defaults]`: used when nothing more specific matches, and fills every section."""


class WebhookSpec(_Strict):
    """`webhook = { url, secret_env }`: where a partner's outcome notifications go
    (CONTRACT section 9). The secret itself is only in the environment variable; both
    are checked by `pipeline.webhooks.target_from` when the file is read."""

    url: str
    secret_env: str


class PartnerSection(RouteKeys):
    """`[partners.<id>]`: the leads of one partner (its id matched exactly), and
    optionally its webhook (never merged into a route)."""

    webhook: WebhookSpec | None = None


class StateSection(RouteKeys):
    """`[states.<XX>]`: the leads of one vehicle state, when the partner has no section."""


class DealerSection(_Strict):
    """`[dealers."<uuid>"]`: one dealer's delivery settings (CONTRACT section 8)."""

    #: Deliveries a second to this dealer from every worker together, replays included.
    max_per_second: Annotated[float, AfterValidator(_positive_rate)] | None = None


class RoutingDocument(_Strict):
    """The whole routing file."""

    defaults: DefaultsSection = Field(default_factory=DefaultsSection)
    partners: dict[str, PartnerSection] = Field(default_factory=dict)
    states: dict[StateCode, StateSection] = Field(default_factory=dict)
    dealers: dict[str, DealerSection] = Field(default_factory=dict)


# --- building the table -----------------------------------------------------------------


def parse_routing(
    text: str, *, origin: str = "<string>", environ: Mapping[str, str] | None = None
) -> RoutingTable:
    """Parse and validate a routing file; `RoutingFileError` lists every problem.
    Webhook secrets are read from `environ` (the process environment by default)."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RoutingFileError(f"routing file {origin} is not valid TOML: {exc}") from None
    return build_table(document, origin=origin, environ=environ)


def build_table(
    document: Mapping[str, object],
    *,
    origin: str,
    environ: Mapping[str, str] | None = None,
) -> RoutingTable:
    """The table of a parsed TOML document; `RoutingFileError` lists every problem."""
    problems = _duplicate_states(document)
    spec: RoutingDocument | None = None
    try:
        spec = RoutingDocument.model_validate(document)
    except ValidationError as exc:
        problems.extend(describe(exc, RoutingDocument))
    webhooks: dict[str, WebhookTarget] = {}
    if spec is not None:
        webhooks = _webhooks(spec, problems, os.environ if environ is None else environ)
    if problems or spec is None:
        raise RoutingFileError(f"invalid routing file {origin}: " + "; ".join(problems))

    warnings: list[str] = []
    defaults = _set_keys(spec.defaults)

    def route(section: RouteKeys, where: str) -> Route | None:
        merged = {**defaults, **_set_keys(section)}
        if "dealer_uuid" not in merged:
            warnings.append(f"{where}: no dealer_uuid here nor in [defaults]: unroutable")
            return None
        return _route(merged, where)

    by_partner = {n: route(s, f"partners.{table_key(n)}") for n, s in spec.partners.items()}
    by_state = {c: route(s, f"states.{c}") for c, s in spec.states.items()}
    default = _route(defaults, "defaults") if "dealer_uuid" in defaults else None
    return RoutingTable(
        origin=origin,
        by_partner=by_partner,
        by_state=by_state,
        default=default,
        warnings=tuple(warnings),
        dealer_rates={
            uuid: d.max_per_second
            for uuid, d in spec.dealers.items()
            if d.max_per_second is not None
        },
        webhooks=webhooks,
    )


def _webhooks(
    spec: RoutingDocument, problems: list[str], environ: Mapping[str, str]
) -> dict[str, WebhookTarget]:
    """Each partner's checked webhook; a problem per unusable one, naming its key."""
    found: dict[str, WebhookTarget] = {}
    for name, section in spec.partners.items():
        if section.webhook is None:
            continue
        try:
            found[name] = target_from(
                section.webhook.model_dump(),
                key=f"partners.{table_key(name)}.webhook",
                environ=environ,
            )
        except WebhookConfigError as exc:
            problems.append(str(exc))
    return found


def _set_keys(section: RouteKeys) -> dict[str, Any]:
    """The route keys a section sets (TOML has no null, so None means not set)."""
    return {k: v for k in ROUTE_KEYS if (v := getattr(section, k)) is not None}


def _route(merged: Mapping[str, Any], where: str) -> Route:
    specs: Sequence[ServiceSpec] | None = merged.get("services")
    services = (
        DEFAULT_SERVICES
        if specs is None
        else tuple(
            Service(code=s.code, name=s.name, type=s.type, due_date=s.due_date) for s in specs
        )
    )
    return Route(
        dealer_uuid=merged["dealer_uuid"],
        dealer_name=merged.get("dealer_name"),
        dealer_code=merged.get("dealer_code"),
        source=merged.get("source", DEFAULT_SOURCE),
        lead_type=merged.get("lead_type", DEFAULT_LEAD_TYPE),
        services=services,
        section=where,
    )


def _duplicate_states(document: Mapping[str, object]) -> list[str]:
    """`[states.tx]` and `[states.TX]` both: one state, two sections."""
    raw = document.get("states")
    if not isinstance(raw, dict):
        return []
    first: dict[str, str] = {}
    problems: list[str] = []
    for name in raw:
        code = str(name).upper()
        if code in first:
            problems.append(f"states.{table_key(name)}: duplicates states.{table_key(first[code])}")
        else:
            first[code] = name
    return problems


__all__ = [
    "ROUTE_KEYS",
    "DealerSection",
    "DefaultsSection",
    "PartnerSection",
    "RouteKeys",
    "RoutingDocument",
    "ServiceSpec",
    "StateSection",
    "WebhookSpec",
    "build_table",
    "parse_routing",
]
