"""The routing table and its lookup: which dealer a lead goes to (CONTRACT section 5).

Lookup order is `[partners.<id>]`, then `[states.<XX>]`, then `[defaults]`; keys the
chosen section does not set come from `[defaults]`, then from the built-in defaults
below. Every section is merged once, when the file is loaded (`pipeline.routing.schema`),
so `RoutingTable.route` is at most two dictionary look-ups on the hot path.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, get_args

from pipeline.mykaarma import LeadType, Source
from pipeline.webhooks import WebhookTarget

#: myKaarma's accepted `dealerDetails.source` values (from `pipeline.mykaarma.Source`).
SOURCES: Final[tuple[str, ...]] = get_args(Source)
#: myKaarma's accepted `leadType` values (from `pipeline.mykaarma.LeadType`).
LEAD_TYPES: Final[tuple[str, ...]] = get_args(LeadType)

#: Source when neither the section nor `[defaults]` sets one: MMC is myKaarma's own
#: channel; BMW_SPARC and AUTOPOINT are integrations a dealer has to be enrolled in.
DEFAULT_SOURCE: Final[Source] = "MMC"
#: Lead type when none is set: a protection-plan lead asks for service, it is no recall.
DEFAULT_LEAD_TYPE: Final[LeadType] = "SERVICE_DEMAND"
#: Services when none are set: what partners send us leads for, a vehicle service contract.
DEFAULT_SERVICE_CODE = "VSC"
DEFAULT_SERVICE_NAME = "Vehicle service contract"


@dataclass(frozen=True, slots=True)
class Service:
    """One entry of myKaarma's `services` list."""

    code: str
    name: str | None = None
    type: str | None = None
    due_date: str | None = None  # yyyy-MM-dd


#: The services of a route whose section and `[defaults]` set none.
DEFAULT_SERVICES = (Service(code=DEFAULT_SERVICE_CODE, name=DEFAULT_SERVICE_NAME),)


@dataclass(frozen=True, slots=True)
class Route:
    """Where one lead goes and how myKaarma should file it."""

    dealer_uuid: str
    dealer_name: str | None
    dealer_code: str | None
    source: str
    lead_type: str
    services: tuple[Service, ...]
    section: str  # the section that matched: "partners.acme", "states.TX" or "defaults"


class RoutingTable:
    """A validated routing file, every section already merged with `[defaults]`.

    A section that matches but names no dealer (no `dealer_uuid` there nor in
    `[defaults]`) maps to None: its leads are unroutable, and the lookup does not fall
    through to a less specific section (the contract: the *chosen* section decides).
    `warnings` says which sections route nowhere, for the operator.
    """

    __slots__ = (
        "_by_partner",
        "_by_state",
        "_default",
        "_webhooks",
        "dealer_rates",
        "origin",
        "warnings",
    )

    def __init__(
        self,
        *,
        origin: str,
        by_partner: Mapping[str, Route | None] | None = None,
        by_state: Mapping[str, Route | None] | None = None,
        default: Route | None = None,
        warnings: tuple[str, ...] = (),
        dealer_rates: Mapping[str, float] | None = None,
        webhooks: Mapping[str, WebhookTarget] | None = None,
    ) -> None:
        self.origin = origin
        self._webhooks = dict(webhooks or {})
        self._by_partner = dict(by_partner or {})
        self._by_state = dict(by_state or {})
        self._default = default
        self.warnings = warnings
        #: dealer uuid -> max_per_second, from the `[dealers."<uuid>"]` tables.
        self.dealer_rates: dict[str, float] = dict(dealer_rates or {})

    def route(self, partner: str | None, state: str | None) -> Route | None:
        """The route for a lead, or None when the chosen section gives it no dealer."""
        if partner is not None and partner in self._by_partner:
            return self._by_partner[partner]
        if state is not None:
            code = state.upper()
            if code in self._by_state:
                return self._by_state[code]
        return self._default

    def webhook_for(self, partner: str | None) -> WebhookTarget | None:
        """The partner's webhook (CONTRACT section 9), or None when it has none."""
        return self._webhooks.get(partner) if partner is not None else None

    @property
    def dealer_uuids(self) -> frozenset[str]:
        """Every dealer the file names: in a route or in a `[dealers]` table."""
        routes = [*self._by_partner.values(), *self._by_state.values(), self._default]
        named = {r.dealer_uuid for r in routes if r is not None}
        return frozenset(named | set(self.dealer_rates))

    @property
    def is_empty(self) -> bool:
        """True when every lead is unroutable."""
        return self._default is None and not any(
            route is not None for route in (*self._by_partner.values(), *self._by_state.values())
        )

    def __repr__(self) -> str:
        return (
            f"RoutingTable(origin={self.origin!r}, partners={sorted(self._by_partner)}, "
            f"states={sorted(self._by_state)}, defaults={self._default is not None}, "
            f"webhooks={sorted(self._webhooks)})"
        )


#: No routing file configured (`LEADPIPE_ROUTING_FILE` unset): every lead is unroutable.
NO_ROUTES = RoutingTable(origin="<no routing file>")
