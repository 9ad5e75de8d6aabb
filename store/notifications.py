"""Outcome notifications in Redis: the outbox, its durable schedule and attempt logs.

A notification is a hash (`Keys.notification`) holding its type, lead id, time, the
snapshot of the lead's fields an event is built from (`SNAPSHOT_FIELDS`), its state
(`pending`, `sent`, `failed`) and its attempt count; each attempt is a JSON entry in
`Keys.notification_attempts`. A lead lists its notifications in
`Keys.lead_notifications`. Pending ones wait in one sorted set (`Keys.notify_schedule`)
scored by when they are next due: now for a new event, the backoff for a retry, the
end of the lease for one being sent. So the schedule is also the sweeper: a worker
killed mid-send leaves its notification due again when the lease runs out.

Emission is part of a lead's transition: the transition scripts (delivered, dead,
duplicate) call `emit` (store/scripts.py) in the same atomic step, so a crash right
after a lead's state change cannot lose its event. It does nothing unless the lead's
record says its partner has a webhook (`RecordField.NOTIFY`), so leads of partners
without one cost one HGET.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from typing import Any

import redis

from pipeline.notifications import SNAPSHOT_FIELDS, NotificationState
from pipeline.notifications import NotificationField as N
from pipeline.notify_stage import NotifyClaim
from pipeline.timefmt import iso
from store import scripts
from store.keys import Keys

#: Prefix of every event id; the id is also the `webhook-id` header.
EVENT_ID_PREFIX = "msg_"
#: Most notifications released per poll of the schedule.
CLAIM_LIMIT = 500


def new_event_id() -> str:
    """A fresh event id: the notification's key suffix and its `webhook-id`."""
    return EVENT_ID_PREFIX + uuid.uuid4().hex


def notify_keys(keys: Keys, lead_id: str) -> list[str]:
    """The KEYS a transition script passes to `emit` (store/scripts.py), in order."""
    return [
        keys.notify_schedule,
        keys.notify_counts,
        keys.lead_notifications(lead_id),
        keys.notification(new_event_id()),
    ]


#: Claim pending notifications that are due: each is pushed one lease ahead (so one
#: poll owns it) and returned with its partner, to be enqueued on `leads.notify`.
#: KEYS: schedule; ARGV: now, lease, limit, notification prefix
CLAIM_DUE = (
    scripts.FIELDS
    + """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
local due = tostring(tonumber(ARGV[1]) + tonumber(ARGV[2]))
local out = {}
for _, id in ipairs(ids) do
  redis.call('ZADD', KEYS[1], due, id)
  table.insert(out, id)
  table.insert(out, redis.call('HGET', ARGV[4] .. id, F.partner) or '')
end
return out
"""
)

#: The send guard: a pending notification, not held by a live attempt and not early,
#: gets a token and a lease; returns 'go' and the whole hash.
#: KEYS: notification, schedule; ARGV: event id, now, token, lease
BEGIN = (
    scripts.NOTIFICATION_FIELDS
    + """
local v = redis.call('HMGET', KEYS[1], N.state, N.token, N.leaseUntil, N.nextAttemptAt)
if not v[1] then redis.call('ZREM', KEYS[2], ARGV[1]) return {'missing'} end
if v[1] ~= 'pending' then redis.call('ZREM', KEYS[2], ARGV[1]) return {'skip', v[1]} end
local now = tonumber(ARGV[2])
if v[2] and tonumber(v[3] or '0') > now then return {'busy', v[1]} end
if v[4] and tonumber(v[4]) > now then return {'early', v[1]} end
local lease_until = tostring(now + tonumber(ARGV[4]))
redis.call('HSET', KEYS[1], N.token, ARGV[3], N.leaseUntil, lease_until)
redis.call('HDEL', KEYS[1], N.nextAttemptAt)
redis.call('ZADD', KEYS[2], lease_until, ARGV[1])
return {'go', v[1], unpack(redis.call('HGETALL', KEYS[1]))}
"""
)

#: After an attempt: log it, then (if the token still holds) pending with a due time,
#: or sent, or failed. KEYS: notification, attempts, schedule, counts
#: ARGV: event id, now, token, attempt_json, new state, due, last status, last error
FINISH = (
    scripts.NOTIFICATION_FIELDS
    + """
local v = redis.call('HMGET', KEYS[1], N.state, N.token)
if not v[1] then return 'missing' end
redis.call('RPUSH', KEYS[2], ARGV[4])
redis.call('HINCRBY', KEYS[1], N.attempts, 1)
redis.call('HSET', KEYS[1], N.lastStatus, ARGV[7], N.lastError, ARGV[8],
  N.lastAttemptAt, ARGV[2], N.updatedAt, ARGV[2])
if v[1] ~= 'pending' or v[2] ~= ARGV[3] then return 'lost' end
redis.call('HDEL', KEYS[1], N.token, N.leaseUntil)
if ARGV[5] == 'pending' then
  redis.call('HSET', KEYS[1], N.nextAttemptAt, ARGV[6])
  redis.call('ZADD', KEYS[3], ARGV[6], ARGV[1])
  return 'pending'
end
local stamp = N.failedAt
if ARGV[5] == 'sent' then stamp = N.sentAt end
redis.call('HSET', KEYS[1], N.state, ARGV[5], stamp, ARGV[2])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('HINCRBY', KEYS[4], 'pending', -1)
redis.call('HINCRBY', KEYS[4], ARGV[5], 1)
return ARGV[5]
"""
)

#: Erase every notification of a lead (retention, forget): hashes, attempt logs,
#: schedule entries, counts. KEYS: lead_events, schedule, counts; ARGV: prefix
FORGET = (
    scripts.NOTIFICATION_FIELDS
    + """
local ids = redis.call('LRANGE', KEYS[1], 0, -1)
for _, id in ipairs(ids) do
  local key = ARGV[1] .. id
  local st = redis.call('HGET', key, N.state)
  if st then redis.call('HINCRBY', KEYS[3], st, -1) end
  redis.call('DEL', key, key .. ':attempts')
  redis.call('ZREM', KEYS[2], id)
end
redis.call('DEL', KEYS[1])
return #ids
"""
)


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


class NotificationStore:
    """The Redis side of notifications; implements `pipeline.notify_stage.NotificationStore`."""

    def __init__(self, client: redis.Redis, keys: Keys | None = None) -> None:
        self.redis = client
        self.keys = keys or Keys()
        register = client.register_script
        self._emit = register(scripts.EMIT)
        self._claim_due = register(CLAIM_DUE)
        self._begin = register(BEGIN)
        self._finish = register(FINISH)
        self._forget = register(FORGET)

    def emit(self, lead_id: str, event_type: str, *, now: float) -> str | None:
        """Write a pending notification for `lead_id` now, if its record asks for one
        (the transitions do this inside their own script); its event id, or None."""
        k = self.keys
        keys = notify_keys(k, lead_id)
        done = self._emit(keys=[k.lead(lead_id), *keys], args=[lead_id, event_type, repr(now)])
        return keys[-1].rsplit(":", 1)[-1] if done else None

    def claim_due_notifications(
        self, *, now: float, lease: float, limit: int = CLAIM_LIMIT
    ) -> list[tuple[str, str]]:
        k = self.keys
        flat = self._claim_due(
            keys=[k.notify_schedule], args=[repr(now), lease, limit, k.notification_prefix]
        )
        items = [_text(i) for i in flat or []]
        return list(zip(items[::2], items[1::2], strict=True))

    def begin_notification(
        self, event_id: str, token: str, *, lease: float, now: float
    ) -> NotifyClaim:
        reply = self._begin(
            keys=[self.keys.notification(event_id), self.keys.notify_schedule],
            args=[event_id, repr(now), token, lease],
        )
        parts = [_text(p) for p in reply or []]
        if not parts:
            return NotifyClaim("missing")
        if parts[0] != "go":
            return NotifyClaim(parts[0], parts[1] if len(parts) > 1 else None)
        record = dict(zip(parts[2::2], parts[3::2], strict=True))
        return NotifyClaim(
            "go",
            parts[1],
            event_type=record.get(N.TYPE, ""),
            lead_id=record.get(N.LEAD_ID, ""),
            at=record.get(N.AT, "0"),
            attempts_before=int(record.get(N.ATTEMPTS) or 0),
            snapshot={n: record[n] for n in SNAPSHOT_FIELDS if n in record},
        )

    def finish_notification(
        self,
        event_id: str,
        token: str,
        attempt: Mapping[str, Any],
        *,
        state: NotificationState,
        due: float | None,
        now: float,
    ) -> str:
        k = self.keys
        status = attempt.get("status")
        reply = self._finish(
            keys=[
                k.notification(event_id),
                k.notification_attempts(event_id),
                k.notify_schedule,
                k.notify_counts,
            ],
            args=[
                event_id,
                repr(now),
                token,
                json.dumps(attempt, separators=(",", ":"), default=str),
                state.value,
                repr(due if due is not None else now),
                "" if status is None else str(status),
                str(attempt.get("error") or ""),
            ],
        )
        return _text(reply)

    def forget_notifications(self, lead_id: str) -> int:
        """Erase every notification of a lead; returns how many there were."""
        k = self.keys
        return int(
            self._forget(
                keys=[k.lead_notifications(lead_id), k.notify_schedule, k.notify_counts],
                args=[k.notification_prefix],
            )
        )

    # -- reading ------------------------------------------------------------------------

    def of_lead(self, lead_id: str) -> list[dict[str, Any]]:
        """Every notification of a lead, oldest first, with its attempt log."""
        ids = [_text(i) for i in self.redis.lrange(self.keys.lead_notifications(lead_id), 0, -1)]
        if not ids:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for event_id in ids:
            pipe.hgetall(self.keys.notification(event_id))
            pipe.lrange(self.keys.notification_attempts(event_id), 0, -1)
        replies = pipe.execute()
        out = []
        for raw, log in zip(replies[::2], replies[1::2], strict=True):
            if raw:
                record = {_text(a): _text(b) for a, b in raw.items()}
                out.append((record, [json.loads(_text(e)) for e in log]))
        return [notification_view(record, log) for record, log in out]

    def counts(self) -> dict[str, int]:
        """Notifications by state (every state present, 0 when none)."""
        return counts_view(self.redis.hgetall(self.keys.notify_counts))


def counts_view(raw: Mapping[bytes | str, bytes | str]) -> dict[str, int]:
    """The notification counts hash as `leadpipe stats` shows it: every state, >= 0."""
    found = {_text(a): int(b) for a, b in raw.items()}
    return {s.value: max(found.get(s.value, 0), 0) for s in NotificationState}


def notification_view(record: Mapping[str, str], log: list[Any]) -> dict[str, Any]:
    """One notification as `leadpipe notifications` shows it."""

    def when(name: str) -> str | None:
        return iso(record.get(name))

    status = record.get(N.LAST_STATUS) or ""
    return {
        "webhookId": record.get(N.EVENT_ID),
        "type": record.get(N.TYPE),
        "state": record.get(N.STATE),
        "attempts": int(record.get(N.ATTEMPTS) or 0),
        "lastStatus": int(status) if status.isdigit() else None,
        "lastError": record.get(N.LAST_ERROR) or None,
        "createdAt": when(N.CREATED_AT),
        "sentAt": when(N.SENT_AT),
        "failedAt": when(N.FAILED_AT),
        "nextAttemptAt": when(N.NEXT_ATTEMPT_AT),
        "attemptLog": log,
    }
