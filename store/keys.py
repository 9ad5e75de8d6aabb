"""Every Redis key leadpipe writes, from one template each (RQ's habit).

A lead id is whatever its sender chose (up to 255 printable characters: `/`, `:`,
spaces, any Unicode), so it never goes into a key name raw: `escape_id` percent-encodes
every byte outside `A-Z a-z 0-9 _ . ~ @ -`, and the result sits inside a hash tag,
`leadpipe:lead:{<escaped id>}`. The escaped form holds no `:`, `{` or `}`, so no id can
name another lead's keys (`X:attempts` is `{X%3Aattempts}`, never `{X}:attempts`), and
all keys of one lead share a Redis Cluster slot. The Lua scripts build the same names
with `LUA_KEY_HELPERS` (kept beside `escape_id`: one rule, two spellings, one test).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from urllib.parse import quote

from pipeline.states import DeadReason

DEFAULT_PREFIX = "leadpipe"
#: Bytes of an id kept as they are in a key name; every other byte becomes %XX.
_SAFE_PUNCTUATION = "@"  # with quote()'s own always-safe set: letters, digits, _ . - ~

#: The Lua spelling of `escape_id` and of the per-lead key names, prepended to the
#: scripts that find a lead's keys from its id (sweeper, retries, dedupe, expiry).
LUA_KEY_HELPERS = r"""
local function escape_id(id)
  return (string.gsub(id, '[^0-9A-Za-z_.~@%-]', function(c)
    return string.format('%%%02X', string.byte(c))
  end))
end
local function lead_key(prefix, id) return prefix .. ':lead:{' .. escape_id(id) .. '}' end
"""


#: Suffixes of every per-lead key besides the record itself (`Keys.lead(id) + suffix`):
#: what retention and forget delete with the record. A new per-lead key goes here.
LEAD_KEY_SUFFIXES = (":attempts", ":history", ":notifications")
#: Suffix of a forgotten lead's tombstone (not erased with the lead: it outlives it).
FORGOTTEN_SUFFIX = ":forgotten"
#: The same list for the Lua scripts that erase a lead.
LUA_LEAD_KEY_SUFFIXES = (
    "local LEAD_KEY_SUFFIXES = {" + ", ".join(f"'{s}'" for s in LEAD_KEY_SUFFIXES) + "}\n"
)


def escape_id(text: str) -> str:
    """`text` as it appears inside a key: UTF-8, percent-encoded outside the safe set."""
    return quote(text, safe=_SAFE_PUNCTUATION, errors="surrogatepass")


def dead_lettered_counter(reason: str) -> str:
    """Counter field (in `Keys.counters`) of leads moved to the dead letters for
    `reason`, ever (it never goes down: a replay or purge leaves it, unlike the
    dead-letter index)."""
    return f"deadLettered.{DeadReason(reason).value}"


@dataclass(frozen=True, slots=True)
class Keys:
    """Key names under one prefix, so tests and tenants can share a Redis safely."""

    prefix: str = DEFAULT_PREFIX

    # -- one lead (all in one hash tag) -----------------------------------------------

    def lead(self, lead_id: str) -> str:
        """Hash: the lead record."""
        return f"{self.prefix}:lead:{{{escape_id(lead_id)}}}"

    def attempts(self, lead_id: str) -> str:
        """List: one JSON entry per delivery attempt."""
        return self.lead(lead_id) + LEAD_KEY_SUFFIXES[0]

    def history(self, lead_id: str) -> str:
        """List: operator events (replays, replaced payloads) with what they replaced."""
        return self.lead(lead_id) + LEAD_KEY_SUFFIXES[1]

    def forgotten(self, lead_id: str) -> str:
        """String: a forgotten lead's tombstone (its id only, no data), so a message
        still on its way cannot bring the record back; holds the lease end of a POST
        that was in flight when the lead was forgotten ("0" once it has ended)."""
        return self.lead(lead_id) + FORGOTTEN_SUFFIX

    @property
    def lead_pattern(self) -> str:
        """SCAN pattern matching every per-lead key."""
        return f"{self.prefix}:lead:*"

    # -- indexes ----------------------------------------------------------------------

    @property
    def active(self) -> str:
        """Sorted set: non-terminal leads scored by their last touch (the sweeper's index)."""
        return f"{self.prefix}:active"

    @property
    def retry(self) -> str:
        """Sorted set: leads waiting for their next delivery attempt, scored by due time."""
        return f"{self.prefix}:retry"

    @property
    def finished(self) -> str:
        """Sorted set: delivered and duplicate leads scored by when they got there (what
        retention ages; dead letters age in `dead`, by failure time)."""
        return f"{self.prefix}:finished"

    @property
    def dead(self) -> str:
        """Sorted set: every dead letter, scored by failure time."""
        return f"{self.prefix}:dlq"

    def dead_by_reason(self, reason: str) -> str:
        """Sorted set: dead letters of one reason, scored by failure time."""
        return f"{self.prefix}:dlq:{reason}"

    def email(self, digest: str) -> str:
        """Set: ids of the leads whose email has this keyed hash (HMAC, never the
        address), so `leadpipe forget --email` needs no scan."""
        return f"{self.prefix}:email:{digest}"

    @property
    def email_secret(self) -> str:
        """String: the per-installation HMAC key of the email index (beside the data)."""
        return f"{self.prefix}:secret:email"

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
        return f"{self.prefix}:txn:{escape_id(partner)}:{escape_id(transaction_id)}"

    # -- dealers (store/dealers.py) ------------------------------------------------------

    @property
    def dealers(self) -> str:
        """Hash: every dealer seen (uuid -> first seen, epoch seconds)."""
        return f"{self.prefix}:dealers"

    @property
    def dealers_holding(self) -> str:
        """Set: dealer uuids that may hold leads (the releaser's work list)."""
        return f"{self.prefix}:dealers:holding"

    @property
    def dealer_rates(self) -> str:
        """Hash: dealer uuid -> max_per_second, published from the routing file."""
        return f"{self.prefix}:dealers:rates"

    @property
    def dealer_prefix(self) -> str:
        """What Lua prepends to `redis.sha1hex(uuid)` to find a dealer's breaker."""
        return f"{self.prefix}:dealer:"

    def dealer(self, dealer_uuid: str) -> str:
        """Hash: a dealer's breaker and rate state; the uuid is hashed, never embedded."""
        digest = hashlib.sha1(dealer_uuid.encode("utf-8"), usedforsecurity=False).hexdigest()
        return f"{self.dealer_prefix}{digest}"

    def dealer_held(self, dealer_uuid: str) -> str:
        """Sorted set: a dealer's held lead ids, scored by age origin (oldest first)."""
        return f"{self.dealer(dealer_uuid)}:held"

    # -- outcome notifications (CONTRACT section 9) -------------------------------------

    def notification(self, event_id: str) -> str:
        """Hash: one notification (event snapshot, state, attempt count); the event id is
        leadpipe's own (`msg_` + hex), never raw input."""
        return f"{self.prefix}:notify:{event_id}"

    def notification_attempts(self, event_id: str) -> str:
        """List: one JSON entry per attempt to send a notification (the notification's
        key plus `:attempts`, which the FORGET script relies on)."""
        return self.notification(event_id) + ":attempts"

    @property
    def notification_prefix(self) -> str:
        """What Lua scripts prepend to an event id to find its notification."""
        return f"{self.prefix}:notify:"

    def lead_notifications(self, lead_id: str) -> str:
        """List: the event ids of one lead's notifications, oldest first (a per-lead
        key: the lead's own key name plus a suffix)."""
        return self.lead(lead_id) + LEAD_KEY_SUFFIXES[2]

    @property
    def notify_schedule(self) -> str:
        """Sorted set: pending notifications scored by when they are next due (new ones
        now, retries after their backoff, claimed ones when their lease runs out)."""
        return f"{self.prefix}:notify-schedule"

    @property
    def notify_counts(self) -> str:
        """Hash: number of notifications in each state (pending, sent, failed)."""
        return f"{self.prefix}:stats:notify"
