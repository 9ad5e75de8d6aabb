"""Dealer health in Redis: breakers, held leads, the per-dealer rate, operator controls.

Every worker shares one breaker per dealer and one rate per dealer; every change is one
Lua script (store/dealer_scripts.py). The delivery guard with breaker and rate is one
script, so checking both costs a delivery no extra round trip; an answer's effect on
the breaker runs in the same pipeline as the lead's own transition.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

import redis

from config import settings as defaults
from pipeline.breaker import Answer, Breaker, BreakerPolicy, BreakerReason, BreakerState
from pipeline.states import DeadReason
from pipeline.store_protocol import ClaimStatus, DeliveryClaim
from store import dealer_scripts as scripts
from store.keys import Keys, dead_lettered_counter
from store.notifications import notify_keys

#: Held leads released (or expired) per dealer per releaser tick: a 50 ms tick lets a
#: dealer without a rate take back ~10,000 leads a second, far more than it answers.
RELEASE_BATCH = 500
#: Held leads moved to the dead letters per DRAIN script call (keeps each call short).
DRAIN_BATCH = 1_000


def _text(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


def _float(value: str | None) -> float | None:
    return float(value) if value not in (None, "") else None


def breaker_from_fields(fields: Mapping[str, str]) -> Breaker:
    """The breaker a dealer hash holds (a missing hash is a closed breaker)."""
    reason = fields.get("reason")
    return Breaker(
        state=BreakerState(fields.get("state") or BreakerState.CLOSED),
        reason=BreakerReason(reason) if reason else None,
        failures=int(fields.get("failures") or 0),
        opened_at=_float(fields.get("openedAt")),
        next_probe_at=_float(fields.get("nextProbeAt")),
        cooldown=float(fields.get("cooldown") or 0.0),
        probe=fields.get("probe") or None,
        probe_until=_float(fields.get("probeUntil")),
        note=fields.get("note") or "",
    )


@dataclass(frozen=True, slots=True)
class DealerLimits:
    """How long a lead may wait, and how many POSTs it may use (CONTRACT section 2)."""

    lease_seconds: float
    max_attempts: int
    max_age_seconds: float


def _parts(reply: list[bytes | str] | None) -> list[str]:
    return [p.decode() if isinstance(p, bytes) else str(p) for p in (reply or [])]


def default_dealer_store(client: redis.Redis, keys: Keys) -> DealerStore:
    """A DealerStore with the documented defaults, for a store built without settings
    (operator tools that only read or control breakers)."""
    policy = BreakerPolicy(
        defaults.BREAKER_FAILURES,
        defaults.BREAKER_COOLDOWN_SECONDS,
        defaults.RETRY_MAX_DELAY_SECONDS,
    )
    limits = DealerLimits(
        defaults.LEASE_SECONDS,
        defaults.RETRY_MAX_ATTEMPTS,
        defaults.MAX_LEAD_AGE_HOURS * 3600.0,
    )
    return DealerStore(client, keys, policy, limits)


class DealerStore:
    """Breakers, held leads and rates of every dealer, in one Redis."""

    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        policy: BreakerPolicy,
        limits: DealerLimits,
    ) -> None:
        self.redis = client
        self.keys = keys
        self.policy = policy
        self.limits = limits
        register = client.register_script
        self._guard = register(scripts.GUARD)
        self._answer = register(scripts.ANSWER)
        self._after_failure = register(scripts.AFTER_FAILURE)
        self._release = register(scripts.RELEASE)
        self._pause = register(scripts.PAUSE)
        self._resume = register(scripts.RESUME)
        self._drain = register(scripts.DRAIN)

    def _policy_args(self) -> list[float]:
        p = self.policy
        return [p.failures, p.cooldown_seconds, p.max_cooldown_seconds]

    # -- the delivery path ------------------------------------------------------------

    def begin_delivery(
        self,
        lead_id: str,
        token: str,
        *,
        lease: float | None = None,
        max_attempts: int | None = None,
        now: float | None = None,
    ) -> DeliveryClaim:
        """The delivery guard: one script, one round trip (see GUARD); it counts the
        attempt on `go`, and answers `exhausted` (the lead now dead) past the cap."""
        k, lim = self.keys, self.limits
        lease = lim.lease_seconds if lease is None else lease
        max_attempts = lim.max_attempts if max_attempts is None else max_attempts
        reply = _parts(
            self._guard(
                keys=[
                    k.lead(lead_id),
                    k.active,
                    k.state_counts,
                    k.dealers,
                    k.dealer_rates,
                    k.retry,
                    k.dealers_holding,
                    k.dead,
                    k.dead_by_reason(DeadReason.EXHAUSTED),
                    *notify_keys(k, lead_id),
                ],
                args=[
                    lead_id,
                    time.time() if now is None else now,
                    token,
                    lease,
                    k.dealer_prefix,
                    max_attempts,
                    lim.max_age_seconds,
                ],
            )
        )
        if not reply:
            return DeliveryClaim("missing", None)
        status, rest = cast(ClaimStatus, reply[0]), reply[1:]
        if status != "go":
            return DeliveryClaim(
                status, rest[0] if rest else None, detail=rest[1] if len(rest) > 1 else ""
            )
        dealer, request, attempts, created, probe = rest
        return DeliveryClaim(
            "go",
            "delivering",
            dealer,
            request,
            int(attempts),
            float(created),
            probe=probe == "1",
        )

    def add_answer(
        self,
        pipe: Any,
        dealer_uuid: str,
        lead_id: str,
        answer: Answer,
        *,
        now: float,
    ) -> None:
        """Queue the answer's effect on the breaker(s) in `pipe` (the caller's round trip)."""
        if not dealer_uuid:
            return
        k = self.keys
        self._answer(
            keys=[k.dealer(dealer_uuid), k.dealers, k.counters],
            args=[k.dealer_prefix, dealer_uuid, lead_id, now, answer.value, *self._policy_args()],
            client=pipe,
        )

    def add_after_failure(
        self,
        pipe: Any,
        lead_id: str,
        token: str,
        attempt_json: str,
        *,
        dealer_uuid: str,
        answer: Answer,
        due: float | None,
        now: float,
    ) -> None:
        """Queue AFTER_FAILURE in `pipe`: hold the lead or schedule its retry at `due`
        (None: hold it whatever the breaker says, e.g. 401/403)."""
        k = self.keys
        self._after_failure(
            keys=[
                k.lead(lead_id),
                k.active,
                k.state_counts,
                k.attempts(lead_id),
                k.retry,
                k.dealer(dealer_uuid),
                k.dealers,
                k.counters,
                k.dealers_holding,
            ],
            args=[
                lead_id,
                now,
                token,
                attempt_json,
                "" if due is None else due,
                k.dealer_prefix,
                dealer_uuid,
                answer.value,
                *self._policy_args(),
            ],
            client=pipe,
        )

    # -- the releaser -----------------------------------------------------------------

    def release(self, *, now: float | None = None, batch: int = RELEASE_BATCH) -> list[str]:
        """Expire old held leads; release probes and, for closed breakers, held leads.
        Returns the ids to enqueue for delivery."""
        k = self.keys
        error = json.dumps(
            {"message": "not delivered within LEADPIPE_MAX_LEAD_AGE_HOURS of receipt"}
        )
        ids = self._release(
            keys=[
                k.dealers_holding,
                k.active,
                k.state_counts,
                k.dead,
                k.dealer_rates,
                k.counters,
                k.notify_schedule,
                k.notify_counts,
            ],
            args=[
                time.time() if now is None else now,
                k.dealer_prefix,
                k.prefix,
                self.limits.lease_seconds,
                batch,
                self.limits.max_age_seconds,
                k.dead_by_reason(""),
                error,
                dead_lettered_counter(DeadReason.EXPIRED),
                k.notification_prefix,
            ],
        )
        return _parts(ids)

    # -- operators --------------------------------------------------------------------

    def known(self) -> list[str]:
        """Every dealer seen by the guard or named by an operator, sorted."""
        return sorted(_text(d) or "" for d in self.redis.hkeys(self.keys.dealers))

    def breaker(self, dealer_uuid: str) -> Breaker:
        raw = self.redis.hgetall(self.keys.dealer(dealer_uuid))
        return breaker_from_fields({_text(n) or "": _text(v) or "" for n, v in raw.items()})

    def pause(self, dealer_uuid: str, *, note: str = "", now: float | None = None) -> str:
        """Hold the dealer's leads until `resume`; returns the breaker state before."""
        k = self.keys
        before = self._pause(
            keys=[k.dealer(dealer_uuid), k.dealers],
            args=[dealer_uuid, time.time() if now is None else now, note],
        )
        return _text(before) or ""

    def resume(self, dealer_uuid: str, *, now: float | None = None) -> str:
        """Close the dealer's breaker; returns the state before."""
        k = self.keys
        before = self._resume(
            keys=[k.dealer(dealer_uuid), k.dealers],
            args=[dealer_uuid, time.time() if now is None else now],
        )
        return _text(before) or ""

    def drain(self, dealer_uuid: str, *, now: float | None = None) -> int:
        """Move the dealer's held leads to the dead letters, reason `drained`."""
        k = self.keys
        error = json.dumps({"message": "drained by an operator while held; replay routes it again"})
        total = 0
        while True:
            moved = int(
                self._drain(
                    keys=[
                        k.dealer_held(dealer_uuid),
                        k.state_counts,
                        k.dead,
                        k.dead_by_reason(DeadReason.DRAINED),
                        k.counters,
                        k.notify_schedule,
                        k.notify_counts,
                    ],
                    args=[
                        time.time() if now is None else now,
                        k.prefix,
                        DRAIN_BATCH,
                        error,
                        dead_lettered_counter(DeadReason.DRAINED),
                        k.notification_prefix,
                    ],
                )
            )
            total += moved
            if moved == 0 or self.redis.zcard(k.dealer_held(dealer_uuid)) == 0:
                return total

    def sync_rates(self, rates: Mapping[str, float]) -> None:
        """Publish the routing file's `max_per_second` table to every worker's guard."""
        k = self.keys
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(k.dealer_rates)
        if rates:
            pipe.hset(k.dealer_rates, mapping={d: repr(float(r)) for d, r in rates.items()})
        pipe.execute()

    def held_count(self, dealer_uuid: str) -> int:
        return int(self.redis.zcard(self.keys.dealer_held(dealer_uuid)))

    def rate(self, dealer_uuid: str) -> float | None:
        value = _text(self.redis.hget(self.keys.dealer_rates, dealer_uuid))
        return float(value) if value else None

    def rates(self) -> dict[str, float]:
        raw = self.redis.hgetall(self.keys.dealer_rates)
        return {_text(d) or "": float(_text(r) or 0) for d, r in raw.items()}
