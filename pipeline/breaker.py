"""A dealer's circuit breaker: what each myKaarma answer does to it (CONTRACT section 8).

Pure state machine, no clock and no Redis. The store runs the same rules atomically in
Lua (store/dealer_scripts.py) so that every worker shares one breaker per dealer; the
integration tests drive both with the same random event sequences and require the
same result, so this module is the readable specification of those scripts.

    closed --N transient failures / 403 / 401 anywhere--> open
    open --cooldown passed, one held lead elected--> half_open (that lead is the probe)
    half_open --probe answered 2xx (or a lead-specific 4xx)--> closed
    half_open --probe failed--> open, cooldown doubled (capped)
    any --operator pause--> paused --operator resume--> closed

While a breaker is not closed its leads are `held`: not POSTed, consuming no attempt.
Any 2xx closes the breaker (the dealer answers), except a pause, which only an
operator lifts.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum


class BreakerState(StrEnum):
    """Whether leads for a dealer are POSTed."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"
    PAUSED = "paused"


class BreakerReason(StrEnum):
    """Why a breaker is not closed (shown by `leadpipe dealers` and `leadpipe status`)."""

    FAILURES = "failures"
    FORBIDDEN = "forbidden"
    UNAUTHORIZED = "unauthorized"
    OPERATOR = "operator"


#: Why a lead is held, for `leadpipe status` and the runbook, by breaker reason.
HELD_BECAUSE = {
    BreakerReason.FAILURES: "myKaarma failed for this dealer several times in a row; "
    "one held lead goes as a probe after the cooldown and a 2xx releases the rest",
    BreakerReason.FORBIDDEN: "myKaarma answered 403 for this dealer (is leadpipe still "
    "subscribed to it?); probes continue after the cooldown",
    BreakerReason.UNAUTHORIZED: "myKaarma answered 401: MYKAARMA_USERNAME/MYKAARMA_PASSWORD "
    "are wrong for every dealer; probes continue after the cooldown, no restart needed",
    BreakerReason.OPERATOR: "an operator paused this dealer; `leadpipe dealers resume` "
    "releases its leads",
}


class Answer(StrEnum):
    """A myKaarma answer, as far as the dealer's breaker is concerned."""

    DELIVERED = "delivered"  # 2xx
    TRANSIENT = "transient"  # 408/425/429/5xx/timeout/network
    FORBIDDEN = "forbidden"  # 403: this dealer refuses us
    UNAUTHORIZED = "unauthorized"  # 401: our credentials are wrong for every dealer
    REJECTED = "rejected"  # another 4xx: the lead's fault, the dealer is fine


class Gate(StrEnum):
    """What the delivery guard does with a lead, given its dealer's breaker."""

    GO = "go"
    PROBE = "probe"
    HOLD = "hold"


#: Answers that open the breaker at once (no failure count needed).
OPENS_AT_ONCE = {
    Answer.FORBIDDEN: BreakerReason.FORBIDDEN,
    Answer.UNAUTHORIZED: BreakerReason.UNAUTHORIZED,
}


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    """The settings that shape every breaker (CONTRACT section 2)."""

    failures: int
    cooldown_seconds: float
    max_cooldown_seconds: float

    def __post_init__(self) -> None:
        if self.failures < 1:
            raise ValueError(f"failures must be at least 1, got {self.failures}")
        if not (self.cooldown_seconds > 0 and self.max_cooldown_seconds > 0):
            raise ValueError("cooldown and its cap must be positive seconds")

    @property
    def first_cooldown(self) -> float:
        """The wait before the first probe after the breaker opens."""
        return min(self.cooldown_seconds, self.max_cooldown_seconds)

    def next_cooldown(self, current: float) -> float:
        """The wait after a failed probe: double the last one, up to the cap."""
        return min(max(current, self.first_cooldown) * 2, self.max_cooldown_seconds)


@dataclass(frozen=True, slots=True)
class Breaker:
    """One dealer's breaker. Times are epoch seconds; `probe` is the probing lead's id."""

    state: BreakerState = BreakerState.CLOSED
    reason: BreakerReason | None = None
    failures: int = 0
    opened_at: float | None = None
    next_probe_at: float | None = None
    cooldown: float = 0.0
    probe: str | None = None
    probe_until: float | None = None
    note: str = ""

    @property
    def releases(self) -> bool:
        """Held leads may go (the breaker is closed)."""
        return self.state == BreakerState.CLOSED

    def probe_due(self, now: float) -> bool:
        """A held lead should be elected as the probe now."""
        if self.state == BreakerState.OPEN:
            return self.next_probe_at is None or now >= self.next_probe_at
        if self.state == BreakerState.HALF_OPEN:
            return self.probe_until is None or now >= self.probe_until
        return False


def _open(b: Breaker, reason: BreakerReason, now: float, cooldown: float) -> Breaker:
    return replace(
        b,
        state=BreakerState.OPEN,
        reason=reason,
        opened_at=b.opened_at if b.state != BreakerState.CLOSED else now,
        next_probe_at=now + cooldown,
        cooldown=cooldown,
        probe=None,
        probe_until=None,
    )


#: A closed breaker with a reset count: it keeps nothing of an outage.
CLOSED = Breaker()


def gate(b: Breaker, *, lead_id: str, now: float, lease: float) -> tuple[Gate, Breaker]:
    """Whether the guard lets a lead go, makes it the probe, or holds it."""
    if b.state == BreakerState.CLOSED:
        return Gate.GO, b
    if b.state == BreakerState.HALF_OPEN and b.probe == lead_id:
        return Gate.PROBE, replace(b, probe_until=now + lease)
    if b.probe_due(now):
        return Gate.PROBE, elect(b, lead_id=lead_id, now=now, lease=lease)
    return Gate.HOLD, b


def elect(b: Breaker, *, lead_id: str, now: float, lease: float) -> Breaker:
    """`lead_id` becomes the probe (the caller checked `probe_due`)."""
    return replace(b, state=BreakerState.HALF_OPEN, probe=lead_id, probe_until=now + lease)


def after_answer(
    b: Breaker, answer: Answer, *, lead_id: str, now: float, policy: BreakerPolicy
) -> Breaker:
    """The breaker after myKaarma answered one POST for this dealer."""
    is_probe = b.state == BreakerState.HALF_OPEN and b.probe == lead_id
    if answer == Answer.DELIVERED:
        if b.state == BreakerState.PAUSED:
            return replace(b, failures=0)
        return CLOSED
    if b.state == BreakerState.PAUSED:
        if answer == Answer.TRANSIENT:
            return replace(b, failures=b.failures + 1)
        return b
    if answer == Answer.REJECTED:
        return CLOSED if is_probe else b
    if answer == Answer.TRANSIENT:
        b = replace(b, failures=b.failures + 1)
        if b.state == BreakerState.CLOSED and b.failures >= policy.failures:
            return _open(b, BreakerReason.FAILURES, now, policy.first_cooldown)
        if is_probe:
            return _open(
                b, b.reason or BreakerReason.FAILURES, now, policy.next_cooldown(b.cooldown)
            )
        return b
    reason = OPENS_AT_ONCE[answer]
    if b.state == BreakerState.CLOSED:
        return _open(b, reason, now, policy.first_cooldown)
    if is_probe:
        return _open(b, reason, now, policy.next_cooldown(b.cooldown))
    return replace(b, reason=reason)


def unauthorized_elsewhere(b: Breaker, *, now: float, policy: BreakerPolicy) -> Breaker:
    """Another dealer's POST answered 401: the credentials are wrong for this one too."""
    if b.state == BreakerState.PAUSED:
        return b
    if b.state == BreakerState.CLOSED:
        return _open(b, BreakerReason.UNAUTHORIZED, now, policy.first_cooldown)
    return replace(b, reason=BreakerReason.UNAUTHORIZED)


def credentials_work(b: Breaker, *, now: float) -> Breaker:
    """A dealer held for 401 delivered: every other such dealer probes at once."""
    if b.state == BreakerState.OPEN and b.reason == BreakerReason.UNAUTHORIZED:
        return replace(b, next_probe_at=now)
    return b


def pause(b: Breaker, *, now: float, note: str = "") -> Breaker:
    """An operator holds the dealer's leads; pausing a paused dealer changes nothing
    but a new note."""
    if b.state == BreakerState.PAUSED:
        return replace(b, note=note or b.note)
    return Breaker(
        state=BreakerState.PAUSED,
        reason=BreakerReason.OPERATOR,
        failures=b.failures,
        opened_at=now,
        note=note,
    )


def resume(b: Breaker) -> Breaker:
    """An operator closes the breaker (from any state); held leads are released."""
    return CLOSED
