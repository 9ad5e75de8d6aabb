"""What the fake myKaarma answers: behaviours, recorded requests, stored leads.

`FakeLeadApi` holds the fake's state and decides each answer; it knows nothing about
sockets (`leadpipe.fake_mykaarma.server` serves it over HTTP), so its rules can be read
and tested on their own. A lead request is decided in these steps, in order::

    behaviour "down"  -> no answer, nothing stored (the server closes the connection)
    fail_rate         -> 503, at random (seedable)
    basic auth        -> 401 when username/password are set and do not match
    body              -> 400 when not a JSON object, or customer, vehicle, dealerDetails,
                         services (non-empty), status == "NEW" or leadType is missing
    behaviour         -> the dealer's answer (below); success stores the lead

(The server sleeps the latency first: latency_ms, or the dealer's slow:<ms>.)

Per-dealer behaviours (``behaviours={dealerUuid: spec}``; the key ``*`` applies to every
dealer without its own entry). A spec is one outcome, optionally joined by a comma with
``slow:<ms>``, e.g. ``"flaky:2,slow:50"``:

    ok                      200 with the success envelope (the default)
    reject                  400, error code INVALID_REQUEST
    status:<code>           always that status (200-599); a 2xx stores the lead
    flaky:<n>               the first n requests per lead answer 503, then success
    retry-after:<s>, 429:<s>  the first request per lead answers 429 with
                            ``Retry-After: <s>`` (seconds, may be fractional), then success
    drop-after-store        stores the lead, then closes the connection without an answer
                            (the ambiguous case); the same lead again answers 200 with
                            isNewCreated false
    down                    closes the connection at once, storing nothing
    slow:<ms>               this dealer's latency instead of latency_ms

A lead is identified by its ``Idempotency-Key`` header, else its body's ``leadId``,
within one dealer: a lead already stored answers 200 with the same prospectUuid and
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import math
import random
import threading
import uuid
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

#: Status recorded for a request answered by closing the connection.
DROPPED = "dropped"

_OUTCOMES = {"ok", "reject", "status", "flaky", "retry-after", "drop-after-store", "down"}
_REQUIRED_OBJECTS = ("customer", "vehicle", "dealerDetails")


class BehaviourError(ValueError):
    """A behaviour spec that does not parse."""


@dataclass(frozen=True)
class Behaviour:
    """One dealer's parsed behaviour: an outcome, its argument, an optional latency."""

    kind: str = "ok"
    arg: float = 0.0
    latency_ms: float | None = None


def parse_behaviour(spec: str) -> Behaviour:
    """Parse a behaviour spec such as ``"flaky:2,slow:50"`` (see the module docstring)."""
    kind, arg, latency = "ok", 0.0, None
    outcomes = 0
    for term in (t.strip() for t in spec.split(",")):
        name, _, value = term.partition(":")
        name = "retry-after" if name == "429" else name
        if name == "slow":
            latency = _number(term, value, minimum=0)
            continue
        if name not in _OUTCOMES or bool(value) != (name in {"status", "flaky", "retry-after"}):
            raise BehaviourError(f"unknown behaviour {term!r}")
        outcomes += 1
        kind = name
        if name == "status":
            arg = _number(term, value, minimum=200, maximum=599, integer=True)
        elif name == "flaky":
            arg = _number(term, value, minimum=0, integer=True)
        elif name == "retry-after":
            arg = _number(term, value, minimum=0)
    if outcomes > 1:
        raise BehaviourError(f"{spec!r} has more than one outcome; only slow:<ms> combines")
    return Behaviour(kind, arg, latency)


def _number(
    term: str, value: str, *, minimum: float, maximum: float = math.inf, integer: bool = False
) -> float:
    try:
        number = float(int(value)) if integer else float(value)
    except ValueError:
        raise BehaviourError(f"{term!r}: {value!r} is not a number") from None
    if not (math.isfinite(number) and minimum <= number <= maximum):
        raise BehaviourError(f"{term!r}: {value!r} is out of range")
    return number


def check_latency(value: float) -> float:
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"latency_ms must be a finite number >= 0, not {value!r}")
    return float(value)


def check_fail_rate(value: float) -> float:
    if not 0.0 <= value <= 1.0:  # also refuses NaN
        raise ValueError(f"fail_rate must be between 0 and 1, not {value!r}")
    return float(value)


def envelope(status: int, code: str | None = None, description: str = "") -> dict[str, Any]:
    """myKaarma's answer envelope, with an error when `code` is given."""
    error = None if code is None else {"code": code, "description": description, "metadata": None}
    return {"statusCode": status, "error": error, "warnings": []}


@dataclass
class Answer:
    """What the server sends back for one lead request."""

    status: int | None  # None: close the connection without answering
    body: dict[str, Any] | None = None
    headers: tuple[tuple[str, str], ...] = ()
    stored: bool = False
    created: bool = False


@dataclass
class LeadRequest:
    """One lead request as the server read it: what the answer depends on."""

    dealer_uuid: str
    lead_id: str | None
    idempotency_key: str | None
    auth_ok: bool
    body_error: str | None

    @property
    def key(self) -> str | None:
        return self.idempotency_key or self.lead_id


class FakeLeadApi:
    """The fake's state and answers, without a server; thread-safe."""

    def __init__(
        self,
        *,
        latency_ms: float = 0,
        fail_rate: float = 0.0,
        username: str | None = None,
        password: str | None = None,
        behaviours: dict[str, str] | None = None,
        seed: int | None = None,
    ) -> None:
        if (username is None) != (password is None):
            raise ValueError("give both username and password, or neither")
        self._credentials = None if username is None else f"{username}:{password}".encode()
        self._lock = threading.Lock()
        self._seed = seed
        self._rng = random.Random(seed)
        self._latency_ms = check_latency(latency_ms)
        self._fail_rate = check_fail_rate(fail_rate)
        self._behaviour_specs: dict[str, str] = {}
        self._behaviours: dict[str, Behaviour] = {}
        self.configure(behaviours=behaviours or {})
        self._records: list[dict[str, Any]] = []
        self._prospects: dict[tuple[str, str], str] = {}
        self._attempts: dict[tuple[str, str | None], int] = {}

    # -- configuration and inspection -----------------------------------------------

    def configure(
        self,
        *,
        latency_ms: float | None = None,
        fail_rate: float | None = None,
        behaviours: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """Change settings at run time (None leaves one as it is); returns the config."""
        parsed = None
        if behaviours is not None:
            if not isinstance(behaviours, dict):
                raise ValueError("behaviours must map dealerUuid to a spec")
            parsed = {str(d): parse_behaviour(str(s)) for d, s in behaviours.items()}
        latency = None if latency_ms is None else check_latency(latency_ms)
        rate = None if fail_rate is None else check_fail_rate(fail_rate)
        with self._lock:
            if latency is not None:
                self._latency_ms = latency
            if rate is not None:
                self._fail_rate = rate
            if parsed is not None and behaviours is not None:
                self._behaviours = parsed
                self._behaviour_specs = {str(d): str(s) for d, s in behaviours.items()}
            return self._config()

    def _config(self) -> dict[str, Any]:
        return {
            "latency_ms": self._latency_ms,
            "fail_rate": self._fail_rate,
            "behaviours": dict(self._behaviour_specs),
        }

    @property
    def requests(self) -> list[dict[str, Any]]:
        """Every lead request seen: time, dealerUuid, leadId, idempotencyKey, authOk,
        status (an int, or "dropped"), stored, created."""
        with self._lock:
            return [dict(r) for r in self._records]

    def stored_lead_ids(self) -> dict[str, int]:
        """leadId -> how many times it was stored or acknowledged (2xx, drop-after-store)."""
        counts: dict[str, int] = {}
        with self._lock:
            for record in self._records:
                if record["stored"]:
                    lead = record["leadId"] or record["idempotencyKey"] or ""
                    counts[lead] = counts.get(lead, 0) + 1
        return counts

    def stats(self) -> dict[str, Any]:
        """``{requests, by_status, stored: {leadId: count}}``."""
        by_status: dict[str, int] = {}
        with self._lock:
            total = len(self._records)
            for record in self._records:
                by_status[str(record["status"])] = by_status.get(str(record["status"]), 0) + 1
        return {"requests": total, "by_status": by_status, "stored": self.stored_lead_ids()}

    def reset(self) -> None:
        """Forget every request, stored lead and per-lead counter (configuration stays)."""
        with self._lock:
            self._records.clear()
            self._prospects.clear()
            self._attempts.clear()
            self._rng = random.Random(self._seed)

    # -- answering ------------------------------------------------------------------

    def behaviour_for(self, dealer_uuid: str) -> tuple[Behaviour, float]:
        with self._lock:
            behaviour = self._behaviours.get(dealer_uuid) or self._behaviours.get("*")
            behaviour = behaviour or Behaviour()
            latency = self._latency_ms if behaviour.latency_ms is None else behaviour.latency_ms
        return behaviour, latency

    def check_auth(self, header: str | None) -> bool:
        if self._credentials is None:
            return True
        scheme, _, token = (header or "").partition(" ")
        try:
            given = base64.b64decode(token.strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        return scheme.lower() == "basic" and hmac.compare_digest(given, self._credentials)

    def answer(self, lead: LeadRequest, behaviour: Behaviour, arrived: float) -> Answer:
        with self._lock:
            answer = self._decide(lead, behaviour)
            self._records.append(
                {
                    "time": arrived,
                    "dealerUuid": lead.dealer_uuid,
                    "leadId": lead.lead_id,
                    "idempotencyKey": lead.idempotency_key,
                    "authOk": lead.auth_ok,
                    "status": DROPPED if answer.status is None else answer.status,
                    "stored": answer.stored,
                    "created": answer.created,
                }
            )
        return answer

    def _decide(self, lead: LeadRequest, behaviour: Behaviour) -> Answer:
        """The answer to one lead request; called with the lock held."""
        kind = behaviour.kind
        if kind == "down":
            return Answer(None)
        if self._fail_rate and self._rng.random() < self._fail_rate:
            return Answer(503, envelope(503, "SERVICE_UNAVAILABLE", "try again later"))
        if not lead.auth_ok:
            return Answer(
                401,
                envelope(401, "UNAUTHORIZED", "bad or missing basic auth credentials"),
                (("WWW-Authenticate", 'Basic realm="myKaarma"'),),
            )
        if lead.body_error:
            return Answer(400, envelope(400, "INVALID_REQUEST", lead.body_error))
        if kind == "reject":
            return Answer(400, envelope(400, "INVALID_REQUEST", "lead rejected by dealer"))
        if kind == "status" and not 200 <= behaviour.arg < 300:
            code = int(behaviour.arg)
            name = HTTPStatus(code).name if code in set(HTTPStatus) else "ERROR"
            return Answer(code, envelope(code, name, f"status {code} by configuration"))
        if kind in {"flaky", "retry-after"}:
            attempt = self._attempts.get((lead.dealer_uuid, lead.key), 0) + 1
            self._attempts[(lead.dealer_uuid, lead.key)] = attempt
            if kind == "flaky" and attempt <= behaviour.arg:
                return Answer(503, envelope(503, "SERVICE_UNAVAILABLE", f"flaky {attempt}"))
            if kind == "retry-after" and attempt == 1:
                body = envelope(429, "TOO_MANY_REQUESTS", "slow down")
                seconds = behaviour.arg
                header = str(int(seconds)) if seconds.is_integer() else str(seconds)
                return Answer(429, body, (("Retry-After", header),))
        prospect, created = self._store(lead)
        if kind == "drop-after-store" and created:
            return Answer(None, stored=True, created=True)
        status = int(behaviour.arg) if kind == "status" else 200
        body = {**envelope(status), "isNewCreated": created, "prospectUuid": prospect}
        return Answer(status, None if status == 204 else body, stored=True, created=created)

    def _store(self, lead: LeadRequest) -> tuple[str, bool]:
        """The lead's prospectUuid, and whether it was created now; lock held."""
        key = lead.key
        if key is not None and (lead.dealer_uuid, key) in self._prospects:
            return self._prospects[(lead.dealer_uuid, key)], False
        prospect = str(uuid.UUID(int=self._rng.getrandbits(128), version=4))
        if key is not None:
            self._prospects[(lead.dealer_uuid, key)] = prospect
        return prospect, True


def check_lead_body(raw: bytes) -> tuple[dict[str, Any] | None, str | None]:
    """The parsed body and a light check's complaint (None when it passes)."""
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None, "body is not JSON"
    if not isinstance(body, dict):
        return None, "body is not a JSON object"
    missing = [name for name in _REQUIRED_OBJECTS if not isinstance(body.get(name), dict)]
    if not (isinstance(body.get("services"), list) and body["services"]):
        missing.append("services")
    if body.get("status") != "NEW":
        missing.append("status (must be NEW)")
    if not body.get("leadType"):
        missing.append("leadType")
    return body, ("missing or invalid: " + ", ".join(missing)) if missing else None
