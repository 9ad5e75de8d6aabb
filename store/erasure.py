"""Everything of a lead goes at once: retention (CONTRACT 7) and `leadpipe forget`.

One Lua function, `erase`, deletes a lead's record and every per-lead key
(`store.keys.LEAD_KEY_SUFFIXES`), takes it out of every index (active, retry,
finished, the dead letters, its email's index entry), releases the dedupe claim it
owns and corrects the per-state counts, in one atomic step. Two scripts use it:

- `EXPIRE_DUE`, run by the workers' loop: delivered and duplicate leads whose
  `finished` score (when they got there) is older than LEADPIPE_RETENTION_DAYS, dead
  letters whose failure time is older than LEADPIPE_DEAD_RETENTION_DAYS. Scores hold
  the moment, not the deadline, so a changed setting applies to every lead at once.
  Leads that are not terminal are in neither index and never expire.
- `FORGET`: the given leads, in any state, each leaving a tombstone (its id, no data)
  so that a message still on its way cannot create the record again; the tombstone
  holds the lease end of a POST in flight, which `forget` waits out.

Why a script and not key TTLs: TTLs would let the record vanish while the indexes
and the counts still name it; one script keeps them consistent, and costs one round
trip per 500 leads (`make bench`: memory stays flat while leads expire).
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import redis

from pipeline.privacy import email_digest
from pipeline.states import DeadReason
from store.keys import FORGOTTEN_SUFFIX, Keys
from store.scripts import ERASE_FUNCTION

log = logging.getLogger(__name__)

#: Leads one EXPIRE_DUE call may erase per index: bounds the time Redis is busy.
EXPIRE_BATCH = 500
#: Bytes of the per-installation HMAC key of the email index.
EMAIL_SECRET_BYTES = 32
#: Counter (in the counters hash) of leads `forget` erased: a count, nothing personal.
FORGOTTEN_COUNTER = "leads.forgotten"
#: How often `forget` looks whether a POST in flight has ended, seconds.
IN_FLIGHT_POLL_SECONDS = 0.05

#: Finds (and unless dry_run, removes) a broker's messages of these lead ids or whose
#: payload email matches; returns the lead ids of the messages found.
BrokerScrub = Callable[[set[str], Callable[[str], bool] | None, bool], set[str]]

# Both scripts below: KEYS: counts, active, retry, finished, dlq, dlq:<reason>...
# (every sorted set a lead id can be in comes after the counts: `index_keys`).

#: ARGV: prefix, finished_cutoff, dead_cutoff, limit. Returns the number erased.
EXPIRE_DUE = (
    ERASE_FUNCTION
    + """
local prefix, limit, n = ARGV[1], tonumber(ARGV[4]), 0
local ids = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', ARGV[2], 'LIMIT', 0, limit)
for _, id in ipairs(ids) do
  local st = redis.call('HGET', lead_key(prefix, id), F.state)
  if st == 'delivered' or st == 'duplicate' or not st then
    erase(prefix, id)
    n = n + 1
  else
    redis.call('ZREM', KEYS[4], id)
  end
end
ids = redis.call('ZRANGEBYSCORE', KEYS[5], '-inf', ARGV[3], 'LIMIT', 0, limit)
for _, id in ipairs(ids) do
  local st = redis.call('HGET', lead_key(prefix, id), F.state)
  if st == 'dead' or not st then
    erase(prefix, id)
    n = n + 1
  end
end
return n
"""
)

#: ARGV: prefix, now, tombstone_ms, then (id, keep_tombstone) pairs: a tombstone is
#: written for a lead that existed, or when the caller found a message of it.
#: Returns (id, state it was in or '', lease end of a POST in flight or '0') triples.
FORGET = (
    ERASE_FUNCTION
    + """
local prefix, now, out = ARGV[1], tonumber(ARGV[2]), {}
for i = 4, #ARGV, 2 do
  local id = ARGV[i]
  local key = lead_key(prefix, id)
  local v = redis.call('HMGET', key, F.state, F.deliveryToken, F.leaseUntil)
  local inflight = '0'
  if v[1] == 'delivering' and v[2] and tonumber(v[3] or '0') > now then inflight = v[3] end
  local st = erase(prefix, id)
  if st or ARGV[i + 1] == '1' then
    redis.call('SET', key .. '"""
    + FORGOTTEN_SUFFIX
    + """', inflight, 'PX', ARGV[3])
  end
  table.insert(out, id)
  table.insert(out, st or '')
  table.insert(out, inflight)
end
return out
"""
)


def index_keys(keys: Keys) -> list[str]:
    """KEYS of the erase scripts: the per-state counts, then every sorted set a lead id
    can be in."""
    reasons = [keys.dead_by_reason(r) for r in DeadReason]
    return [keys.state_counts, keys.active, keys.retry, keys.finished, keys.dead, *reasons]


def email_secret(client: redis.Redis, keys: Keys) -> bytes:
    """This installation's HMAC key of the email index, created by whoever needs it
    first (SET NX: every process agrees on one)."""
    client.set(keys.email_secret, secrets.token_hex(EMAIL_SECRET_BYTES), nx=True)
    value = client.get(keys.email_secret)
    if value is None:  # pragma: no cover - deleted between the two commands
        raise redis.ResponseError("the email index key vanished; try again")
    return value if isinstance(value, bytes) else str(value).encode()


@dataclass(frozen=True, slots=True)
class Forgotten:
    """One lead `forget` erased: the state it was in ('' when only a message of it
    was found) and the lease end of a POST that was in flight (0 when none)."""

    lead_id: str
    state: str
    in_flight_until: float


@dataclass
class ForgetResult:
    """What `forget_leads` did: the lead ids erased (or, dry, that would be)."""

    lead_ids: list[str]
    dry_run: bool
    #: Leads whose POST was in flight and had not ended when the wait ran out.
    still_in_flight: list[str] = field(default_factory=list)
    #: Leads whose POST was in flight when they were erased (waited out, or not).
    were_in_flight: list[str] = field(default_factory=list)


class Eraser:
    """Retention and forgetting over one Redis (the state Redis)."""

    def __init__(self, client: redis.Redis, keys: Keys | None = None) -> None:
        self.redis = client
        self.keys = keys or Keys()
        self._expire = client.register_script(EXPIRE_DUE)
        self._forget = client.register_script(FORGET)
        self._secret: bytes | None = None

    # -- retention ------------------------------------------------------------------

    def expire_due(
        self,
        *,
        retention_seconds: float,
        dead_retention_seconds: float,
        now: float | None = None,
        limit: int = EXPIRE_BATCH,
    ) -> int:
        """Erase up to `limit` expired leads of each kind; how many were erased."""
        now = time.time() if now is None else now
        erased = self._expire(
            keys=index_keys(self.keys),
            args=[self.keys.prefix, now - retention_seconds, now - dead_retention_seconds, limit],
        )
        return int(erased)

    # -- the email index ------------------------------------------------------------

    def email_secret(self) -> bytes:
        """This installation's HMAC key, created the first time anyone needs it."""
        if self._secret is None:
            self._secret = email_secret(self.redis, self.keys)
        return self._secret

    def email_key(self, address: str) -> str:
        """The index key of the leads with this email address (any spelling)."""
        return self.keys.email(email_digest(self.email_secret(), address))

    def ids_by_email(self, address: str) -> list[str]:
        members = self.redis.smembers(self.email_key(address))
        return sorted(m.decode() if isinstance(m, bytes) else str(m) for m in members)

    def existing(self, lead_ids: Iterable[str]) -> list[str]:
        """Those of `lead_ids` that have a record."""
        ids = list(dict.fromkeys(lead_ids))
        pipe = self.redis.pipeline(transaction=False)
        for lead_id in ids:
            pipe.exists(self.keys.lead(lead_id))
        return [i for i, found in zip(ids, pipe.execute(), strict=True) if found]

    # -- forget ---------------------------------------------------------------------

    def forget(
        self,
        lead_ids: Sequence[str],
        *,
        tombstone_seconds: float,
        found_in_broker: Iterable[str] = (),
        now: float | None = None,
    ) -> list[Forgotten]:
        """Erase these leads in any state; each that existed (or had a message in the
        broker) leaves a tombstone for `tombstone_seconds`."""
        broker = set(found_in_broker)
        args: list[str | float | int] = [
            self.keys.prefix,
            time.time() if now is None else now,
            max(1, int(tombstone_seconds * 1000)),
        ]
        for lead_id in dict.fromkeys([*lead_ids, *broker]):
            args.extend((lead_id, "1" if lead_id in broker else "0"))
        if len(args) == 3:
            return []
        flat = [
            v.decode() if isinstance(v, bytes) else str(v)
            for v in self._forget(keys=index_keys(self.keys), args=args)
        ]
        done = []
        for lead_id, state, until in zip(flat[::3], flat[1::3], flat[2::3], strict=True):
            if state or lead_id in broker:
                done.append(Forgotten(lead_id, state, float(until)))
        return done

    def in_flight(self, forgotten: Iterable[Forgotten], *, now: float | None = None) -> list[str]:
        """Forgotten leads whose POST may still be running: the tombstone still holds a
        lease end in the future (the worker sets it to 0 when its POST has ended)."""
        now = time.time() if now is None else now
        waiting = [f for f in forgotten if f.in_flight_until > now]
        if not waiting:
            return []
        values = self.redis.mget([self.keys.forgotten(f.lead_id) for f in waiting])
        return [
            f.lead_id
            for f, v in zip(waiting, values, strict=True)
            if v is not None and float(v) > now
        ]

    def post_ended(self, lead_id: str) -> None:
        """A worker whose POST ended after its lead was forgotten says so."""
        self.redis.set(self.keys.forgotten(lead_id), "0", xx=True, keepttl=True)

    def is_forgotten(self, lead_id: str) -> bool:
        return bool(self.redis.exists(self.keys.forgotten(lead_id)))

    def forget_leads(
        self,
        *,
        lead_ids: Sequence[str] = (),
        email: str | None = None,
        dry_run: bool = False,
        scrub: BrokerScrub | None = None,
        tombstone_seconds: float,
        wait_seconds: float,
    ) -> ForgetResult:
        """`leadpipe forget`: the leads named, or every lead with this email, in any
        state, with their queued ingest messages; then waits (at most `wait_seconds`)
        for a POST that was in flight to end, so none ends after this returns."""
        matches: Callable[[str], bool] | None = None
        targets = list(lead_ids)
        if email is not None:
            secret = self.email_secret()
            digest = email_digest(secret, email)
            matches = lambda address: email_digest(secret, address) == digest  # noqa: E731
            targets += self.ids_by_email(email)
        named = set(targets)
        existing = self.existing(targets)
        in_broker = scrub(named, matches, dry_run) if scrub is not None else set()
        if dry_run:
            return ForgetResult(sorted({*existing, *in_broker}), True)
        forgotten = self.forget(
            existing, tombstone_seconds=tombstone_seconds, found_in_broker=in_broker
        )
        if scrub is not None:  # a message a worker took off a queue meanwhile
            late = scrub(named | {f.lead_id for f in forgotten}, matches, False)
            late -= {f.lead_id for f in forgotten}
            forgotten += self.forget([], tombstone_seconds=tombstone_seconds, found_in_broker=late)
        deadline = time.monotonic() + wait_seconds
        waiting = were_in_flight = self.in_flight(forgotten)
        while waiting and time.monotonic() < deadline:
            time.sleep(IN_FLIGHT_POLL_SECONDS)
            waiting = self.in_flight(forgotten)
        ids = sorted({f.lead_id for f in forgotten})
        # No personal data in the log or the counters: how many, and when.
        if ids:
            self.redis.hincrby(self.keys.counters, FORGOTTEN_COUNTER, len(ids))
        log.info("forget: %d lead(s) erased", len(ids))
        return ForgetResult(ids, False, waiting, were_in_flight)
