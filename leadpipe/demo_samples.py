"""The demo's sample leads, its routing, and how it tells whether each lead ended well.

One sample per case of CONTRACT section 4 a newcomer should see: each vehicle
identification method, invalid input, a duplicate, an unroutable lead, a rejection by
myKaarma and a flaky myKaarma; and a dealer whose endpoint is down, so its breaker
opens, holds its leads, and closes again (section 8). The fake myKaarma's `BEHAVIOURS`
and `ROUTING` give the rejecting, the flaky and the failing dealer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from string import Template
from typing import Any

from pipeline.states import TERMINAL_STATES, LeadState

#: How the fake myKaarma answers the demo's dealers (every other dealer: 200).
BEHAVIOURS = {"demo-picky": "reject", "demo-flaky": "flaky:2", "demo-outage": "status:503"}
#: The dealer whose endpoint answers 503 until its breaker opens (`leadpipe.demo`).
OUTAGE_DEALER = "demo-outage"
#: The routing file the demo's workers read.
ROUTING = """\
# Written by `leadpipe demo`; removed when it ends.
[defaults]
source = "MMC"
lead_type = "SERVICE_DEMAND"
services = [{ code = "VSC", name = "Vehicle service contract" }]

[partners.acme]
dealer_uuid = "demo-main-street"
dealer_name = "Main Street Motors"
dealer_code = "MSM"
# acme's outcome notifications: a receiver the demo runs, verifying each signature
webhook = { url = "$webhook_url", secret_env = "$secret_env" }

[partners.picky]
dealer_uuid = "demo-picky"      # the fake answers 400

[partners.flaky]
dealer_uuid = "demo-flaky"      # the fake answers 503 twice per lead

[partners.outage]
dealer_uuid = "demo-outage"     # the fake answers 503 until the breaker opens

[states.TX]
dealer_uuid = "demo-lone-star"  # leads from Texas, when the partner has no section
dealer_name = "Lone Star Auto"
"""
#: The variable holding the demo partner's webhook secret (made anew on every run).
WEBHOOK_SECRET_ENV = "LEADPIPE_DEMO_WEBHOOK_SECRET"  # noqa: S105 - a variable name


def routing(webhook_url: str) -> str:
    """The demo's routing file, with acme's webhook pointing at the demo's receiver."""
    return Template(ROUTING).substitute(webhook_url=webhook_url, secret_env=WEBHOOK_SECRET_ENV)


@dataclass(frozen=True)
class Sample:
    """One sample lead and where it should end."""

    key: str
    title: str
    partner: str
    payload: dict[str, Any]
    expect_state: str
    expect_reason: str | None = None
    #: Sent only once the lead of this sample is validated (a later resubmission).
    after: str | None = None

    @property
    def expected(self) -> str:
        return (
            f"{self.expect_state} ({self.expect_reason})"
            if self.expect_reason
            else self.expect_state
        )


def _lead(first: str, last: str, email: str) -> dict[str, str]:
    return {"firstName": first, "lastName": last, "email": email}


def samples(run: str) -> list[Sample]:
    """The sample leads; `run` makes their transaction ids new on every run."""
    vin_txn = f"demo-{run}-1"
    return [
        Sample("vin", "valid, identified by VIN", "acme", {
            "lead": _lead("Ada", "Lovelace", "ada@example.com"),
            "vehicle": {"vin": "1HGCM82633A004352", "state": "CA", "mileage": 42000},
            "transactionId": vin_txn,
            "utmParameters": "utm_source=acme&utm_medium=cps&utm_campaign=spring-promo",
        }, "delivered"),
        Sample("make_model_year", "valid, by make+model+year", "acme", {
            "lead": _lead(" Grace ", "Hopper", " Grace.Hopper@Example.COM "),
            "vehicle": {"make": "Toyota", "model": "Camry", "year": "2020", "state": "ca",
                        "mileage": "45,000"},
            "transactionId": f"demo-{run}-2",
        }, "delivered"),
        Sample("plate_state", "valid, by plate+state, routed by state", "roadside", {
            "lead": _lead("Alan", "Turing", "alan@example.com"),
            "vehicle": {"licensePlate": "abc-123", "state": "TX", "mileage": 88000},
            "transactionId": f"demo-{run}-3",
        }, "delivered"),
        Sample("invalid", "breaks several rules", "acme", {
            "lead": _lead("", "Doe", "not-an-email"),
            "vehicle": {"make": "Ford", "year": 1985, "state": "ZZ", "mileage": 0},
            "transactionId": f"demo-{run}-4",
        }, "dead", "invalid"),
        Sample("duplicate", "same partner+transactionId as 'vin'", "acme", {
            "lead": _lead("Ada", "Lovelace", "ada@example.com"),
            "vehicle": {"vin": "1HGCM82633A004352", "state": "CA", "mileage": 42000},
            "transactionId": vin_txn,
        }, "duplicate", after="vin"),
        Sample("unroutable", "partner without a route", "nobody", {
            "lead": _lead("Edsger", "Dijkstra", "edsger@example.com"),
            "vehicle": {"vin": "1HGCM82633A004352", "state": "CA", "mileage": 1200},
            "transactionId": f"demo-{run}-6",
        }, "dead", "unroutable"),
        Sample("rejected", "myKaarma answers 400", "picky", {
            "lead": _lead("Barbara", "Liskov", "barbara@example.com"),
            "vehicle": {"make": "Honda", "model": "Civic", "year": 2018, "state": "NY",
                        "mileage": 61000},
            "transactionId": f"demo-{run}-7",
        }, "dead", "rejected"),
        Sample("flaky", "myKaarma answers 503 twice, then 200", "flaky", {
            "lead": _lead("Donald", "Knuth", "don@example.com"),
            "vehicle": {"vin": "1HGCM82633A004352", "state": "CA", "mileage": 30500},
            "transactionId": f"demo-{run}-8",
        }, "delivered"),
    ] + [
        Sample(f"breaker_{n}", "dealer down: breaker opens, holds, closes", "outage", {
            "lead": _lead("Frances", "Allen", f"frances{n}@example.com"),
            "vehicle": {"vin": "1HGCM82633A004352", "state": "CA", "mileage": 15000 + n},
            "transactionId": f"demo-{run}-outage-{n}",
        }, "delivered")
        for n in (1, 2, 3)
    ]  # fmt: skip


@dataclass
class Tracked:
    """A sample lead on its way: its id once sent, its state, its final record."""

    number: int
    sample: Sample
    lead_id: str | None = None
    state: str | None = None
    record: dict[str, Any] | None = None
    duplicate_of: str | None = None  # the lead id a duplicate must point at

    @property
    def done(self) -> bool:
        return self.state in TERMINAL_STATES

    @property
    def actual(self) -> str:
        if self.lead_id is None:
            return "not sent"
        reason = (self.record or {}).get("reason")
        state = self.state or "queued"
        return f"{state} ({reason})" if state == LeadState.DEAD and reason else state

    @property
    def ok(self) -> bool:
        record = self.record or {}
        if self.state != self.sample.expect_state:
            return False
        if self.sample.expect_reason and record.get("reason") != self.sample.expect_reason:
            return False
        return self.duplicate_of is None or record.get("duplicateOf") == self.duplicate_of

    def to_json(self) -> dict[str, Any]:
        record = self.record or {}
        return {
            "number": self.number,
            "sample": self.sample.key,
            "title": self.sample.title,
            "leadId": self.lead_id,
            "partner": self.sample.partner,
            "expected": {"state": self.sample.expect_state, "reason": self.sample.expect_reason},
            "state": self.state,
            "reason": record.get("reason"),
            "vehicleIdMethod": record.get("vehicleIdMethod"),
            "dealerUuid": record.get("dealerUuid"),
            "attempts": [a.get("status") for a in record.get("attempts") or []],
            "why": explain(record) if record else "",
            "ok": self.ok,
        }


def explain(record: dict[str, Any]) -> str:
    """Why a lead ended where it did, in one line (no customer data)."""
    statuses = [str(a.get("status") or a.get("error")) for a in record.get("attempts") or []]
    error = record.get("error") or {}
    state, reason = record.get("state"), record.get("reason")
    if state == LeadState.DELIVERED:
        prospect = (record.get("prospectUuid") or "")[:8]
        return (
            f"{record.get('vehicleIdMethod')} -> {record.get('dealerUuid')}, "
            f"prospect {prospect}…, attempts {', '.join(statuses)}"
        )
    if state == LeadState.DUPLICATE:
        return f"duplicate of {record.get('duplicateOf')}"
    if reason == "invalid":
        fields = [str(e.get("field")) for e in error.get("errors") or []]
        if not fields:
            return str(error.get("message"))
        return (
            f"{len(fields)} {'rule' if len(fields) == 1 else 'rules'} broken: {', '.join(fields)}"
        )
    if reason == "rejected":
        code = (error.get("mykaarma") or {}).get("code", "")
        return f"myKaarma answered HTTP {error.get('status')} {code}".rstrip()
    if state == LeadState.DEAD:
        return str(error.get("message") or reason)
    return f"still {state}"


@dataclass
class DemoReport:
    leads: list[Tracked]
    seconds: float
    redis: str
    timed_out: bool
    workers: list[dict[str, Any]] = field(default_factory=list)
    #: Events acme's receiver accepted, each verified: type, leadId, webhookId, tries.
    webhooks: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.timed_out and all(t.ok for t in self.leads) and bool(self.webhooks)

    def counts(self) -> dict[str, int]:
        """The demo's own leads by final state (dead ones by reason)."""
        counts: dict[str, int] = {}
        for t in self.leads:
            counts[t.actual] = counts.get(t.actual, 0) + 1
        return counts

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "seconds": round(self.seconds, 2),
            "redis": self.redis,
            "timedOut": self.timed_out,
            "workers": self.workers,
            "counts": self.counts(),
            "webhooks": self.webhooks,
            "leads": [t.to_json() for t in self.leads],
        }
