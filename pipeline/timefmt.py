"""Times as the record and the operator views spell them: ISO 8601, in UTC.

One formatter (`iso`) and one parser (`parse_iso8601`), so a time written by a stage
reads back the same in `status`, `dlq list --since` and a sender's `received_at`.
"""

from __future__ import annotations

from datetime import UTC, datetime


def iso(epoch: float | str | None) -> str | None:
    """Epoch seconds (a number or its text) as ISO 8601 in UTC, to the millisecond;
    None for None or an empty string (a field that is not set)."""
    if epoch is None or epoch == "":
        return None
    return datetime.fromtimestamp(float(epoch), tz=UTC).isoformat(timespec="milliseconds")


def parse_iso8601(text: str) -> datetime:
    """An ISO 8601 time, timezone-aware: `Z` means UTC and so does no offset at all.
    ValueError when `text` is not one."""
    moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment


def parse_since(text: str) -> float:
    """An ISO 8601 time (naive means UTC) as epoch seconds; ValueError when unreadable."""
    return parse_iso8601(text).timestamp()
