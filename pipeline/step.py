"""What a stage tells the transport to do next (shared by every stage)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

NextTask = Literal["enrich", "deliver"]
#: Record fields a stage writes: names to text or numbers.
Record = dict[str, str | int | float]


@dataclass(frozen=True, slots=True)
class Step:
    """What the transport does after a stage: enqueue `next` for the lead, or stop.
    `outcome` is the task's return value (`received`, `dead:invalid`, `retry`, ...)."""

    lead_id: str
    next: NextTask | None = None
    outcome: str = ""
