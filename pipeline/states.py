"""Lead states and dead-letter reasons (CONTRACT section 4)."""

from __future__ import annotations

from enum import StrEnum


class LeadState(StrEnum):
    """Where a lead is: received -> validated -> delivering (<-> held) -> one terminal state."""

    RECEIVED = "received"
    VALIDATED = "validated"
    DELIVERING = "delivering"
    HELD = "held"  # its dealer's breaker is not closed (CONTRACT section 8)
    DELIVERED = "delivered"
    DEAD = "dead"
    DUPLICATE = "duplicate"


TERMINAL_STATES = frozenset({LeadState.DELIVERED, LeadState.DEAD, LeadState.DUPLICATE})


class DeadReason(StrEnum):
    """Why a lead is in the dead-letter store."""

    INVALID = "invalid"
    UNROUTABLE = "unroutable"
    REJECTED = "rejected"
    EXHAUSTED = "exhausted"
    EXPIRED = "expired"
    DRAINED = "drained"
