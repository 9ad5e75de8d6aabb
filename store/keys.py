"""Every Redis key leadpipe writes, from one template each (RQ's habit)."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_PREFIX = "leadpipe"


@dataclass(frozen=True, slots=True)
class Keys:
    """Key names under one prefix, so tests and tenants can share a Redis safely."""

    prefix: str = DEFAULT_PREFIX

    def lead(self, lead_id: str) -> str:
        """Hash: the lead record."""
        return f"{self.prefix}:lead:{lead_id}"

    def attempts(self, lead_id: str) -> str:
        """List: one JSON entry per delivery attempt."""
        return f"{self.prefix}:lead:{lead_id}:attempts"

    def history(self, lead_id: str) -> str:
        """List: operator events (replays, replaced payloads) with what they replaced."""
        return f"{self.prefix}:lead:{lead_id}:history"

    @property
    def lead_prefix(self) -> str:
        """What Lua scripts prepend to a lead id to find its record."""
        return f"{self.prefix}:lead:"

    @property
    def active(self) -> str:
        """Sorted set: non-terminal leads scored by their last touch (the sweeper's index)."""
        return f"{self.prefix}:active"

    @property
    def retry(self) -> str:
        """Sorted set: leads waiting for their next delivery attempt, scored by due time."""
        return f"{self.prefix}:retry"

    @property
    def dead(self) -> str:
        """Sorted set: every dead letter, scored by failure time."""
        return f"{self.prefix}:dlq"

    def dead_by_reason(self, reason: str) -> str:
        """Sorted set: dead letters of one reason, scored by failure time."""
        return f"{self.prefix}:dlq:{reason}"

    @property
    def state_counts(self) -> str:
        """Hash: number of leads in each state, kept by the transition scripts."""
        return f"{self.prefix}:stats:states"

    @property
    def counters(self) -> str:
        """Hash: event counters (attempt outcomes, unreadable messages)."""
        return f"{self.prefix}:stats:counters"

    @property
    def latency(self) -> str:
        """Hash: delivery latency histogram (received -> 2xx), one field per bucket."""
        return f"{self.prefix}:stats:latency"

    def transaction(self, partner: str, transaction_id: str) -> str:
        """String: the lead id that owns a partner's transactionId (dedupe claim)."""
        return f"{self.prefix}:txn:{len(partner)}:{partner}:{transaction_id}"
