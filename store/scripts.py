"""The Lua scripts behind every lead state change.

Each script reads the record, checks the state it expects, and writes the new state,
the indexes (active, retry, dead letters) and the per-state counters in one atomic
step. A worker killed between two scripts leaves a consistent lead that the sweeper
can pick up; it can never leave a lead half-moved.

Conventions: KEYS[1] is the lead hash, KEYS[2] the active index, KEYS[3] the state
counters; ARGV[1] the lead id, ARGV[2] the time now (epoch seconds). Extra record
fields are passed as name/value pairs at the end of ARGV.

Record field names: the scripts never spell one. Every script starts with `FIELDS`,
a Lua table `F` built from `pipeline.record_fields.RecordField` (the one list of the
record's fields), and says `F.deliveryToken`, `F.leaseUntil`, ... A name missing from
that list is nil in Lua (an error reply, never a silently new field), and
`tests/unit/test_record_fields.py` checks every `F.<name>` here against the list.
"""

from __future__ import annotations

from pipeline.notifications import SNAPSHOT_FIELDS, NotificationField
from pipeline.record_fields import RecordField
from store.keys import LUA_KEY_HELPERS as _LUA_KEY_HELPERS
from store.keys import LUA_LEAD_KEY_SUFFIXES as _LUA_LEAD_KEY_SUFFIXES

#: The record's field names as a Lua table, prepended to every script, with the key
#: helpers (`lead_key(prefix, id)`: store/keys.py).
FIELDS = (
    "local F = {" + ", ".join(f"{field.value} = '{field.value}'" for field in RecordField) + "}\n"
) + _LUA_KEY_HELPERS

#: A notification's own field names (`pipeline.notifications.NotificationField`), as `N`.
NOTIFICATION_FIELDS = (
    "local N = {"
    + ", ".join(f"{field.value} = '{field.value}'" for field in NotificationField)
    + "}\n"
)

#: The record fields a notification copies, as a Lua list.
_SNAPSHOT = "{" + ", ".join(f"F.{name}" for name in SNAPSHOT_FIELDS) + "}"

# Shared helpers, prepended to every script that changes a lead's state.
_PRELUDE = (
    FIELDS
    + NOTIFICATION_FIELDS
    + """
local function move(counts, from, to)
  if from then redis.call('HINCRBY', counts, from, -1) end
  if to then redis.call('HINCRBY', counts, to, 1) end
end
local function one_of(value, csv)
  return value ~= nil and value ~= false
    and string.find(',' .. csv .. ',', ',' .. value .. ',', 1, true) ~= nil
end
"""
    + """
-- Outcome notification (CONTRACT section 9), in the same atomic step as the lead's
-- transition, so no crash can separate them. Nothing happens unless the record has
-- F.notify set. `emit_to` takes the keys: the notify schedule, the notification
-- counts, the lead's notification list, the new notification's hash (its key ends
-- with the event id, `msg_...`). A script that moves many leads at once can call it
-- with keys it builds (list: the lead key .. ':notifications'; hash: the notification
-- prefix .. 'msg_' .. a fresh id). `emit` reads them from KEYS[n..n+3], the four keys
-- a caller passes right after the script's own (`store.notifications.notify_keys`);
-- with none passed it does nothing.
local function emit_to(etype, lead_key, lead_id, now, schedule, counts, events, key)
  if redis.call('HGET', lead_key, F.notify) ~= '1' then return false end
  local event_id = string.match(key, '[^:]+$')
  local names = """
    + _SNAPSHOT
    + """
  local values = redis.call('HMGET', lead_key, unpack(names))
  redis.call('HSET', key, N.eventId, event_id, N.type, etype, N.leadId, lead_id,
    N.at, now, N.createdAt, now, N.state, 'pending', N.attempts, '0')
  for i, name in ipairs(names) do
    if values[i] then redis.call('HSET', key, name, values[i]) end
  end
  redis.call('ZADD', schedule, now, event_id)
  redis.call('HINCRBY', counts, 'pending', 1)
  redis.call('RPUSH', events, event_id)
  return true
end
local function emit(etype, lead_key, lead_id, now, n)
  if not KEYS[n + 3] then return false end
  return emit_to(etype, lead_key, lead_id, now, KEYS[n], KEYS[n + 1], KEYS[n + 2], KEYS[n + 3])
end
-- A lead becomes a dead letter (DEAD, the guard's `exhausted`, a held lead expired or
-- drained): state, reason and times, with `...` more fields; no delivery claim or hold
-- left; counted; indexed by time and by reason; its dedupe claim (`txn_key`, when it
-- still names this lead) released, so a corrected resubmission is not blocked. The
-- caller takes it out of its own indexes and emits `lead.dead`.
local function enter_dead(key, id, from, reason, now, counts, dlq, dlq_reason, txn_key, ...)
  redis.call('HSET', key, F.state, 'dead', F.reason, reason, F.failedAt, now,
    F.updatedAt, now, ...)
  redis.call('HDEL', key, F.deliveryToken, F.leaseUntil, F.nextAttemptAt, F.paceSlot,
    F.heldReason, F.heldAt)
  move(counts, from, 'dead')
  redis.call('ZADD', dlq, now, id)
  redis.call('ZADD', dlq_reason, now, id)
  if txn_key and redis.call('GET', txn_key) == id then redis.call('DEL', txn_key) end
end
-- A delivery that failed transiently gives up its token and lease and waits in the
-- retry schedule until `due` (SCHEDULE_RETRY, and the dealer-aware AFTER_FAILURE).
local function park_for_retry(key, id, now, due, active, retry)
  redis.call('HSET', key, F.nextAttemptAt, due, F.updatedAt, now)
  redis.call('HDEL', key, F.deliveryToken, F.leaseUntil)
  redis.call('ZREM', active, id)
  redis.call('ZADD', retry, due, id)
end
"""
)

#: The helpers every lead-moving script starts with (`store/dealer_lua.py` too).
PRELUDE = _PRELUDE

#: Everything of one lead goes in one step (retention, forget, purge): the record and
#: every per-lead key, its place in every index (KEYS[2..]: the sorted sets, after
#: KEYS[1], the per-state counts, and its dealer's held set), its email-index entry and
#: the dedupe claim it owns.
#: Returns the state it was in (false when there was no record).
ERASE_FUNCTION = (
    FIELDS
    + _LUA_LEAD_KEY_SUFFIXES
    + """
local function erase(prefix, id)
  local key = lead_key(prefix, id)
  local v = redis.call('HMGET', key, F.state, F.txnKey, F.emailKey, F.dealerUuid)
  if v[1] then redis.call('HINCRBY', KEYS[1], v[1], -1) end
  if v[2] and redis.call('GET', v[2]) == id then redis.call('DEL', v[2]) end
  if v[3] then redis.call('SREM', v[3], id) end
  -- a held lead waits in its dealer's held set (store/keys.py: Keys.dealer_held), which
  -- must never release it again
  if v[4] and v[4] ~= '' then
    redis.call('ZREM', prefix .. ':dealer:' .. redis.sha1hex(v[4]) .. ':held', id)
  end
  -- its outcome notifications (store/keys.py: Keys.lead_notifications, Keys.notification)
  for _, event in ipairs(redis.call('LRANGE', key .. ':notifications', 0, -1)) do
    local note = prefix .. ':notify:' .. event
    local state = redis.call('HGET', note, "state")  -- the notification's own field
    if state then redis.call('HINCRBY', prefix .. ':stats:notify', state, -1) end
    redis.call('DEL', note, note .. ':attempts')
    redis.call('ZREM', prefix .. ':notify-schedule', event)
  end
  redis.call('DEL', key)
  for _, suffix in ipairs(LEAD_KEY_SUFFIXES) do redis.call('DEL', key .. suffix) end
  for i = 2, #KEYS do redis.call('ZREM', KEYS[i], id) end
  return v[1]
end
"""
)

#: Emit on its own (tests, tools); the transitions call `emit` inside their own script.
#: KEYS: lead, notify keys (see `emit`); ARGV: lead id, type, now
EMIT = _PRELUDE + "return emit(ARGV[2], KEYS[1], ARGV[1], ARGV[3], 2)\n"

#: Create the record once; a second ingest of the same lead id changes nothing, and a
#: forgotten lead (its tombstone) is never created again. With an email-index key, the
#: lead joins that index (a keyed hash of its address: `store.erasure`).
#: KEYS: lead, active, counts, dlq, dlq:<reason>, notify keys (4, see `emit`),
#: tombstone, email index; ARGV: id, now, state, has_email, fields...
CREATE = (
    _PRELUDE
    + """
local st = redis.call('HGET', KEYS[1], F.state)
if st then return st end
if redis.call('EXISTS', KEYS[10]) == 1 then return 'forgotten' end
local state = ARGV[3]
redis.call('HSET', KEYS[1], F.state, state, F.leadId, ARGV[1],
  F.createdAt, ARGV[2], F.updatedAt, ARGV[2], unpack(ARGV, 5))
if ARGV[4] == '1' then
  redis.call('SADD', KEYS[11], ARGV[1])
  redis.call('HSET', KEYS[1], F.emailKey, KEYS[11])
end
move(KEYS[3], nil, state)
if state == 'dead' then
  redis.call('HSET', KEYS[1], F.failedAt, ARGV[2])
  redis.call('ZADD', KEYS[4], ARGV[2], ARGV[1])
  redis.call('ZADD', KEYS[5], ARGV[2], ARGV[1])
  emit('lead.dead', KEYS[1], ARGV[1], ARGV[2], 6)
else
  redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
end
return false
"""
)

#: received -> validated (or duplicate when another live lead owns the transactionId;
#: a duplicate is terminal: it enters `finished`, where retention ages it).
#: KEYS: lead, active, counts, txn, notify keys (4, see `emit`), finished
#: ARGV: id, now, key_prefix, has_txn, fields...
ENRICH_COMMIT = (
    _PRELUDE
    + """
local st = redis.call('HGET', KEYS[1], F.state)
if st ~= 'received' then return {'skip', st or 'missing'} end
local new, owner = 'validated', ARGV[1]
if ARGV[4] == '1' then
  local current = redis.call('GET', KEYS[4])
  if current and current ~= ARGV[1] then
    local owner_state = redis.call('HGET', lead_key(ARGV[3], current), F.state)
    if owner_state and owner_state ~= 'dead' then owner = current end
  end
  if owner == ARGV[1] then
    redis.call('SET', KEYS[4], ARGV[1])
    redis.call('HSET', KEYS[1], F.txnKey, KEYS[4])
  else
    new = 'duplicate'
  end
end
redis.call('HSET', KEYS[1], F.state, new, F.updatedAt, ARGV[2], unpack(ARGV, 5))
move(KEYS[3], st, new)
if new == 'duplicate' then
  redis.call('HSET', KEYS[1], F.duplicateOf, owner)
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('ZADD', KEYS[9], ARGV[2], ARGV[1])
  emit('lead.duplicate', KEYS[1], ARGV[1], ARGV[2], 5)
else
  redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
end
return {new, owner}
"""
)

#: Any expected state -> dead, indexed as a dead letter; releases the dedupe claim so a
#: corrected resubmission is not blocked. With a token, only the delivery holding it
#: may kill the lead (a stale worker records its attempt and nothing else).
#: KEYS: lead, active, counts, dlq, dlq:<reason>, attempts, notify keys (see `emit`)
#: ARGV: id, now, expected_csv, reason, token, attempt_json, fields...
DEAD = (
    _PRELUDE
    + """
local v = redis.call('HMGET', KEYS[1], F.state, F.deliveryToken, F.txnKey)
local st = v[1]
if not st then return {'missing'} end
if not one_of(st, ARGV[3]) then return {'skip', st} end
if ARGV[6] ~= '' then redis.call('RPUSH', KEYS[6], ARGV[6]) end
if ARGV[5] ~= '' and v[2] ~= ARGV[5] then return {'lost', st} end
enter_dead(KEYS[1], ARGV[1], st, ARGV[4], ARGV[2], KEYS[3], KEYS[4], KEYS[5], v[3],
  unpack(ARGV, 7))
redis.call('ZREM', KEYS[2], ARGV[1])
emit('lead.dead', KEYS[1], ARGV[1], ARGV[2], 7)
return {'dead', st}
"""
)

# The delivery guard (with the dealer breaker, rate and age) is store/dealer_scripts.GUARD.

#: myKaarma answered 2xx: delivering -> delivered (terminal: it enters `finished`,
#: where retention ages it). The attempt is always logged (it was counted before the
#: POST, by the guard).
#: KEYS: lead, active, counts, attempts, notify keys (4, see `emit`), finished
#: ARGV: id, now, attempt_json, fields...
DELIVERED = (
    _PRELUDE
    + """
local st = redis.call('HGET', KEYS[1], F.state)
if not st then return {'missing'} end
redis.call('RPUSH', KEYS[4], ARGV[3])
if st ~= 'validated' and st ~= 'delivering' then return {'skip', st} end
redis.call('HSET', KEYS[1], F.state, 'delivered', F.deliveredAt, ARGV[2],
  F.updatedAt, ARGV[2], unpack(ARGV, 4))
redis.call('HDEL', KEYS[1], F.deliveryToken, F.leaseUntil, F.nextAttemptAt)
move(KEYS[3], st, 'delivered')
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[9], ARGV[2], ARGV[1])
emit('lead.delivered', KEYS[1], ARGV[1], ARGV[2], 5)
return {'delivered', st}
"""
)

#: A transient failure: log the attempt, park the lead in the retry schedule.
#: KEYS: lead, active, counts, attempts, retry; ARGV: id, now, token, attempt_json, due
SCHEDULE_RETRY = (
    _PRELUDE
    + """
local v = redis.call('HMGET', KEYS[1], F.state, F.deliveryToken)
if not v[1] then return {'missing'} end
redis.call('RPUSH', KEYS[4], ARGV[4])
if v[1] ~= 'delivering' or v[2] ~= ARGV[3] then return {'lost', v[1]} end
park_for_retry(KEYS[1], ARGV[1], ARGV[2], ARGV[5], KEYS[2], KEYS[5])
return {'scheduled', v[1]}
"""
)

#: Move due retries back to the active index; the caller then enqueues a delivery for
#: each. A crash before that enqueue is covered by the sweeper (the lead is active).
#: KEYS: retry, active; ARGV: now, limit, key_prefix
CLAIM_DUE_RETRIES = (
    FIELDS
    + """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, id in ipairs(ids) do
  redis.call('ZREM', KEYS[1], id)
  redis.call('ZADD', KEYS[2], ARGV[1], id)
  redis.call('HDEL', lead_key(ARGV[3], id), F.nextAttemptAt)
end
return ids
"""
)

#: Leads untouched past their lease: touch them again (so one sweep owns them) and
#: return id/state pairs for the caller to re-enqueue. An expired in-flight delivery
#: loses its token, so the worker that held it can no longer finish it.
#: KEYS: active; ARGV: now, cutoff, limit, key_prefix
SWEEP = (
    FIELDS
    + """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for _, id in ipairs(ids) do
  local key = lead_key(ARGV[4], id)
  local st = redis.call('HGET', key, F.state)
  if st == 'received' or st == 'validated' or st == 'delivering' then
    redis.call('ZADD', KEYS[1], ARGV[1], id)
    if st == 'delivering' then redis.call('HDEL', key, F.deliveryToken, F.leaseUntil) end
    table.insert(out, id)
    table.insert(out, st)
  else
    redis.call('ZREM', KEYS[1], id)
  end
end
return out
"""
)

#: A dead lead goes back to `received` (attempt count reset, attempt log kept); its
#: dead-letter entry stays until the replay is enqueued (REPLAY_COMPLETE), so a crash
#: in between loses nothing: the sweeper sees an active lead. A replaced payload moves
#: the lead to its new email's index (has_email '1') or out of any (has_email '0').
#: KEYS: lead, active, counts, history, email index
#: ARGV: id, now, history_json, payload ('' keeps), has_email
REPLAY_PREPARE = (
    _PRELUDE
    + """
local v = redis.call('HMGET', KEYS[1], F.state, F.emailKey)
local st = v[1]
if not st then return {'missing'} end
if st ~= 'dead' then return {'skip', st} end
redis.call('HSET', KEYS[1], F.state, 'received', F.updatedAt, ARGV[2],
  F.replayedAt, ARGV[2], F.attemptCount, '0')
if ARGV[4] ~= '' then
  redis.call('HSET', KEYS[1], F.payload, ARGV[4])
  if v[2] then redis.call('SREM', v[2], ARGV[1]) end
  redis.call('HDEL', KEYS[1], F.emailKey)
  if ARGV[5] == '1' then
    redis.call('SADD', KEYS[5], ARGV[1])
    redis.call('HSET', KEYS[1], F.emailKey, KEYS[5])
  end
end
redis.call('HDEL', KEYS[1], F.reason, F.error, F.failedAt, F.deliveryToken, F.leaseUntil,
  F.nextAttemptAt, F.duplicateOf, F.request, F.dealerUuid)
redis.call('RPUSH', KEYS[4], ARGV[3])
redis.call('HINCRBY', KEYS[1], F.replays, 1)
move(KEYS[3], st, 'received')
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
return {'ok', st}
"""
)

#: After the replay is enqueued: drop the dead-letter entries, unless the lead has
#: died again meanwhile (then its fresh entry must stay, and only the one left under
#: a previous, different reason goes).
#: KEYS: lead, dlq, dlq:<reason>...; ARGV: id, the reason of each dlq:<reason> key
REPLAY_COMPLETE = (
    FIELDS
    + """
local v = redis.call('HMGET', KEYS[1], F.state, F.reason)
if v[1] == 'dead' then
  for i = 3, #KEYS do
    if ARGV[i - 1] ~= v[2] then redis.call('ZREM', KEYS[i], ARGV[1]) end
  end
  return 0
end
for i = 2, #KEYS do redis.call('ZREM', KEYS[i], ARGV[1]) end
return 1
"""
)

#: Delete a dead lead for good: everything of it (ERASE_FUNCTION).
#: KEYS: counts, active, retry, finished, dlq, dlq:<reason>...; ARGV: prefix, id
PURGE = (
    ERASE_FUNCTION
    + """
local st = redis.call('HGET', lead_key(ARGV[1], ARGV[2]), F.state)
if not st then return 'missing' end
if st ~= 'dead' then return st end
erase(ARGV[1], ARGV[2])
return 'purged'
"""
)
