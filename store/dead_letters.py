"""The dead-letter registry: list, show, replay and purge dead leads (RQ's
`FailedJobRegistry`, which owns its own requeue). `leadpipe dlq` only parses options
and prints what this module returns.

Dead letters are indexed in Redis by failure time (`Keys.dead`) and by reason
(`Keys.dead_by_reason`); the record keeps the payload as received, the error and the
attempts. An index entry can briefly outlive its lead's death (a replay between its
two steps, below), so every read checks the record itself.

A replay sends a dead lead through the whole pipeline again under the same lead id, in
three steps, each safe to be interrupted after:

1. `LeadStore.replay_prepare`: dead -> received, with a history entry (what failed,
   and the old payload when a new one replaces it); the lead joins the active index
   but keeps its dead-letter entry.
2. enqueue `leads.enrich` with the lead id (the caller's `enqueue`).
3. `LeadStore.replay_complete`: drop the dead-letter entry (unless it died again).

Killed after 1, the lead is `received` and active: the worker's sweeper enqueues it
after its lease, and a replay of every dead letter enqueues it again at once (an entry
whose lead is `received` is "resumed"). Killed after 2, the entry is dropped by the
next such replay. The delivery guard makes any second message harmless.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.privacy import payload_email
from pipeline.states import DeadReason, LeadState
from store.records import LeadStore, dumps
from store.views import dead_letter_entry, iso, lead_view

#: Dead letters a listing returns unless told otherwise.
DEFAULT_LIST_LIMIT = 100
#: Index entries read per round trip while a listing fills its limit.
LIST_PAGE = 200

#: States a lead reaches once a replay has got it moving again.
_MOVING = frozenset(
    {LeadState.VALIDATED, LeadState.DELIVERING, LeadState.DELIVERED, LeadState.DUPLICATE}
)

#: What a dry run reports for each planned action.
WOULD = {"replay": "would-replay", "resume": "would-resume", "complete": "would-skip",
         "skip": "would-skip", "unknown": "unknown"}  # fmt: skip


class EnqueueFailed(Exception):
    """The broker did not take a replayed lead; it stays `received` (the sweeper or the
    next replay sends it)."""


class Pacer:
    """At most `rate` events per second (None: no limit): `wait()` before each one."""

    def __init__(self, rate: float | None, clock: Callable[[], float] = time.monotonic) -> None:
        self._interval = 1.0 / rate if rate else 0.0
        self._clock = clock
        self._next = clock()

    def wait(self) -> None:
        if not self._interval:
            return
        delay = self._next - self._clock()
        if delay > 0:
            time.sleep(delay)
        self._next = max(self._next, self._clock()) + self._interval


@dataclass
class ReplayItem:
    """One lead of a replay: what was (or would be) done, and why."""

    lead_id: str
    action: str  # replay | resume | complete | skip | unknown
    state: str | None = None
    reason: str | None = None
    message: str = ""
    record: dict[str, Any] | None = None
    done: str = ""  # replayed | resumed | skipped | unknown | failed | not-attempted | would-…

    def to_json(self) -> dict[str, Any]:
        return {
            "leadId": self.lead_id,
            "result": self.done,
            "state": self.state,
            "reason": self.reason,
            "message": self.message or None,
        }


def skip_message(record: dict[str, Any]) -> str:
    state = record["state"]
    if state == LeadState.DELIVERED:
        return "already delivered"
    if state == LeadState.DUPLICATE:
        return f"a duplicate of {record.get('duplicateOf')}, not a dead letter"
    return f"still in the pipeline ({state}), not a dead letter"


def history_entry(record: dict[str, Any], *, replaced_payload: bool) -> dict[str, Any]:
    """The operator-history entry of a replay: what failed, and the old payload."""
    entry: dict[str, Any] = {
        "at": iso(time.time()),
        "action": "replay",
        "previousReason": record.get("reason"),
        "previousError": record.get("error"),
    }
    if replaced_payload:
        entry["previousPayload"] = record.get("payload")
    return entry


def replay_summary(items: Sequence[ReplayItem], *, dry_run: bool) -> dict[str, Any]:
    """Counts of a replay (or dry run) and one `{leadId, result, state, reason, message}`
    per lead: the `--json` shape of `dlq replay`."""

    def count(*results: str) -> int:
        return sum(1 for i in items if i.done in results)

    if dry_run:
        replayed, skipped = count("would-replay", "would-resume"), count("would-skip")
    else:
        replayed, skipped = count("replayed", "resumed"), count("skipped")
    return {
        "dryRun": dry_run,
        "replayed": replayed,
        "skipped": skipped,
        "unknown": count("unknown"),
        "failed": count("failed", "not-attempted"),
        "leads": [item.to_json() for item in items],
    }


class DeadLetters:
    """The dead letters of one store and every operation on them."""

    def __init__(self, store: LeadStore) -> None:
        self.store = store

    # -- reading --------------------------------------------------------------------

    def _index(self, reason: DeadReason | None) -> str:
        keys = self.store.keys
        return keys.dead_by_reason(reason) if reason else keys.dead

    def _page(self, key: str, since: float | None, start: int, num: int) -> list[str]:
        low: float | str = "-inf" if since is None else since
        ids = self.store.redis.zrevrangebyscore(key, "+inf", low, start=start, num=num)
        return [i.decode() if isinstance(i, bytes) else str(i) for i in ids]

    def ids(self, *, reason: DeadReason | None = None, since: float | None = None) -> list[str]:
        """Every lead id in the index, newest first, including entries a replay has not
        completed yet (a replay of them resumes or completes it)."""
        key = self._index(reason)
        low: float | str = "-inf" if since is None else since
        ids = self.store.redis.zrevrangebyscore(key, "+inf", low)
        return [i.decode() if isinstance(i, bytes) else str(i) for i in ids]

    def is_indexed(self, lead_id: str) -> bool:
        return self.store.redis.zscore(self.store.keys.dead, lead_id) is not None

    def entries(
        self,
        *,
        reason: DeadReason | None = None,
        since: float | None = None,
        limit: int = DEFAULT_LIST_LIMIT,
    ) -> list[dict[str, Any]]:
        """Up to `limit` dead letters, newest first, each with its reason, error and the
        payload as received. Filters apply before the limit: index entries whose lead
        is no longer dead (or died again of another reason) are passed over and the
        next ones read, so `limit` entries come back whenever that many match."""
        key = self._index(reason)
        found: list[dict[str, Any]] = []
        start = 0
        while len(found) < limit:
            page = self._page(key, since, start, max(LIST_PAGE, limit))
            for lead_id in page:
                record = lead_view(self.store, lead_id)
                if record is None or record["state"] != LeadState.DEAD:
                    continue
                if reason is not None and record.get("reason") != reason.value:
                    continue
                found.append(dead_letter_entry(record))
                if len(found) == limit:
                    break
            if len(page) < max(LIST_PAGE, limit):
                break
            start += len(page)
        return found

    def show(self, lead_id: str) -> dict[str, Any] | None:
        """The full record of `lead_id` (None when there is no such lead)."""
        return lead_view(self.store, lead_id)

    # -- replay ---------------------------------------------------------------------

    def plan(self, lead_id: str) -> ReplayItem:
        """What to do with `lead_id`: replay a dead lead; resume one a killed replay left
        `received`; drop the stale entry of one an earlier replay got moving; else skip."""
        record = lead_view(self.store, lead_id)
        if record is None:
            message = "no such lead: check the id with `leadpipe dlq list`"
            return ReplayItem(lead_id, "unknown", message=message)
        state, reason = record["state"], record.get("reason")
        if state == LeadState.DEAD:
            return ReplayItem(lead_id, "replay", state, reason, record=record)
        indexed = self.is_indexed(lead_id)
        if indexed and state == LeadState.RECEIVED:
            message = "an interrupted replay: enqueued again"
            return ReplayItem(lead_id, "resume", state, reason, message, record)
        if indexed and state in _MOVING:
            message = (
                skip_message(record) + " (an earlier replay; its dead-letter entry is dropped)"
            )
            return ReplayItem(lead_id, "complete", state, reason, message, record)
        return ReplayItem(lead_id, "skip", state, reason, skip_message(record), record)

    @staticmethod
    def dry_run(items: Sequence[ReplayItem]) -> None:
        """Mark what each item would do; change nothing."""
        for item in items:
            item.done = WOULD[item.action]

    def replay_one(
        self,
        item: ReplayItem,
        enqueue: Callable[[str], None],
        *,
        new_payload: dict[str, Any] | None = None,
        pacer: Pacer | None = None,
    ) -> None:
        """Do the item's action; `EnqueueFailed` from `enqueue` propagates."""
        store = self.store
        if item.action in ("skip", "unknown"):
            item.done = "skipped" if item.action == "skip" else "unknown"
            return
        if item.action == "complete":
            store.replay_complete(item.lead_id)
            item.done = "skipped"
            return
        # Pace before preparing: a prepared lead is enqueued at once, never left waiting
        # long enough for the sweeper to enqueue it too.
        if pacer is not None:
            pacer.wait()
        if item.action == "replay":
            assert item.record is not None
            history = history_entry(item.record, replaced_payload=new_payload is not None)
            payload = dumps(new_payload) if new_payload is not None else ""
            email = payload_email(new_payload) if new_payload is not None else None
            outcome = store.replay_prepare(item.lead_id, history, payload=payload, email=email)
            if outcome.status != "ok":  # it changed since we looked (an operator, a worker)
                item.state, item.done = outcome.state, "skipped"
                item.message = f"no longer dead ({outcome.state or 'gone'})"
                return
        enqueue(item.lead_id)
        store.replay_complete(item.lead_id)
        item.done = "replayed" if item.action == "replay" else "resumed"

    def replay(
        self,
        items: Sequence[ReplayItem],
        enqueue: Callable[[str], None],
        *,
        new_payload: dict[str, Any] | None = None,
        rate: float | None = None,
        advance: Callable[[], None] = lambda: None,
    ) -> None:
        """Replay every item in order, at most `rate` per second; once the broker
        refuses one, attempt no more (they are marked `not-attempted`)."""
        pacer = Pacer(rate)
        broker_down: str | None = None
        for item in items:
            if broker_down is not None:
                item.done, item.message = "not-attempted", broker_down
                advance()
                continue
            try:
                self.replay_one(item, enqueue, new_payload=new_payload, pacer=pacer)
            except EnqueueFailed as exc:
                item.done = "failed"
                item.message = (
                    f"not enqueued, the broker is unreachable ({exc}); the lead stays "
                    "received and the worker's sweeper sends it after its lease, or run "
                    "`leadpipe dlq replay --all` again"
                )
                broker_down = "not attempted: the broker is unreachable"
            advance()

    # -- purge ----------------------------------------------------------------------

    def purge(self, lead_id: str) -> str:
        """Delete a dead lead for good: `purged`, `missing`, or the state that forbade it."""
        return self.store.purge(lead_id)

    def purge_many(self, lead_ids: Sequence[str]) -> list[dict[str, str]]:
        """`{leadId, result}` for each lead, in order."""
        return [{"leadId": lead_id, "result": self.purge(lead_id)} for lead_id in lead_ids]
