"""The Lua scripts behind every lead state change.

Each script reads the record, checks the state it expects, and writes the new state,
the indexes (active, retry, dead letters) and the per-state counters in one atomic
step. A worker killed between two scripts leaves a consistent lead that the sweeper
can pick up; it can never leave a lead half-moved.

Conventions: KEYS[1] is the lead hash, KEYS[2] the active index, KEYS[3] the state
counters; ARGV[1] the lead id, ARGV[2] the time now (epoch seconds). Extra record
fields are passed as name/value pairs at the end of ARGV.
"""

from __future__ import annotations

# Shared helpers, prepended to every script.
_PRELUDE = """
local function move(counts, from, to)
  if from then redis.call('HINCRBY', counts, from, -1) end
  if to then redis.call('HINCRBY', counts, to, 1) end
end
local function one_of(value, csv)
  return value ~= nil and value ~= false
    and string.find(',' .. csv .. ',', ',' .. value .. ',', 1, true) ~= nil
end
"""

#: Create the record once; a second ingest of the same lead id changes nothing.
#: KEYS: lead, active, counts, dlq, dlq:<reason>; ARGV: id, now, state, fields...
CREATE = (
    _PRELUDE
    + """
local st = redis.call('HGET', KEYS[1], 'state')
if st then return st end
local state = ARGV[3]
redis.call('HSET', KEYS[1], 'state', state, 'leadId', ARGV[1],
  'createdAt', ARGV[2], 'updatedAt', ARGV[2], unpack(ARGV, 4))
move(KEYS[3], nil, state)
if state == 'dead' then
  redis.call('HSET', KEYS[1], 'failedAt', ARGV[2])
  redis.call('ZADD', KEYS[4], ARGV[2], ARGV[1])
  redis.call('ZADD', KEYS[5], ARGV[2], ARGV[1])
else
  redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
end
return false
"""
)

#: received -> validated (or duplicate when another live lead owns the transactionId).
#: KEYS: lead, active, counts, txn; ARGV: id, now, lead_prefix, has_txn, fields...
ENRICH_COMMIT = (
    _PRELUDE
    + """
local st = redis.call('HGET', KEYS[1], 'state')
if st ~= 'received' then return {'skip', st or 'missing'} end
local new, owner = 'validated', ARGV[1]
if ARGV[4] == '1' then
  local current = redis.call('GET', KEYS[4])
  if current and current ~= ARGV[1] then
    local owner_state = redis.call('HGET', ARGV[3] .. current, 'state')
    if owner_state and owner_state ~= 'dead' then owner = current end
  end
  if owner == ARGV[1] then
    redis.call('SET', KEYS[4], ARGV[1])
    redis.call('HSET', KEYS[1], 'txnKey', KEYS[4])
  else
    new = 'duplicate'
  end
end
redis.call('HSET', KEYS[1], 'state', new, 'updatedAt', ARGV[2], unpack(ARGV, 5))
move(KEYS[3], st, new)
if new == 'duplicate' then
  redis.call('HSET', KEYS[1], 'duplicateOf', owner)
  redis.call('ZREM', KEYS[2], ARGV[1])
else
  redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
end
return {new, owner}
"""
)

#: Any expected state -> dead, indexed as a dead letter; releases the dedupe claim so a
#: corrected resubmission is not blocked. With a token, only the delivery holding it
#: may kill the lead (a stale worker records its attempt and nothing else).
#: KEYS: lead, active, counts, dlq, dlq:<reason>, attempts
#: ARGV: id, now, expected_csv, reason, token, attempt_json, fields...
DEAD = (
    _PRELUDE
    + """
local v = redis.call('HMGET', KEYS[1], 'state', 'deliveryToken', 'txnKey')
local st = v[1]
if not st then return {'missing'} end
if not one_of(st, ARGV[3]) then return {'skip', st} end
if ARGV[6] ~= '' then
  redis.call('RPUSH', KEYS[6], ARGV[6])
  redis.call('HINCRBY', KEYS[1], 'attemptCount', 1)
end
if ARGV[5] ~= '' and v[2] ~= ARGV[5] then return {'lost', st} end
redis.call('HSET', KEYS[1], 'state', 'dead', 'reason', ARGV[4],
  'failedAt', ARGV[2], 'updatedAt', ARGV[2], unpack(ARGV, 7))
redis.call('HDEL', KEYS[1], 'deliveryToken', 'leaseUntil', 'nextAttemptAt')
move(KEYS[3], st, 'dead')
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[4], ARGV[2], ARGV[1])
redis.call('ZADD', KEYS[5], ARGV[2], ARGV[1])
if v[3] and redis.call('GET', v[3]) == ARGV[1] then redis.call('DEL', v[3]) end
return {'dead', st}
"""
)

#: The delivery guard: validated/delivering -> delivering with a token and a lease.
#: A lead already delivered (or dead, or duplicate) is never posted again, whatever the
#: broker redelivers; one held by a live delivery is left alone.
#: KEYS: lead, active, counts; ARGV: id, now, token, lease_seconds
BEGIN_DELIVERY = (
    _PRELUDE
    + """
local v = redis.call('HMGET', KEYS[1], 'state', 'deliveryToken', 'leaseUntil',
  'nextAttemptAt', 'dealerUuid', 'request', 'attemptCount', 'createdAt')
local st = v[1]
if not st then return {'missing'} end
if st ~= 'validated' and st ~= 'delivering' then return {'skip', st} end
local now = tonumber(ARGV[2])
if v[2] and tonumber(v[3] or '0') > now then return {'busy', st} end
if v[4] and tonumber(v[4]) > now then return {'early', st} end
redis.call('HSET', KEYS[1], 'state', 'delivering', 'deliveryToken', ARGV[3],
  'leaseUntil', tostring(now + tonumber(ARGV[4])), 'updatedAt', ARGV[2])
redis.call('HDEL', KEYS[1], 'nextAttemptAt')
if st ~= 'delivering' then move(KEYS[3], st, 'delivering') end
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
return {'go', v[5] or '', v[6] or '', v[7] or '0', v[8] or ARGV[2]}
"""
)

#: myKaarma answered 2xx: delivering -> delivered. The attempt is always logged.
#: KEYS: lead, active, counts, attempts; ARGV: id, now, attempt_json, fields...
DELIVERED = (
    _PRELUDE
    + """
local st = redis.call('HGET', KEYS[1], 'state')
if not st then return {'missing'} end
redis.call('RPUSH', KEYS[4], ARGV[3])
redis.call('HINCRBY', KEYS[1], 'attemptCount', 1)
if st ~= 'validated' and st ~= 'delivering' then return {'skip', st} end
redis.call('HSET', KEYS[1], 'state', 'delivered', 'deliveredAt', ARGV[2],
  'updatedAt', ARGV[2], unpack(ARGV, 4))
redis.call('HDEL', KEYS[1], 'deliveryToken', 'leaseUntil', 'nextAttemptAt')
move(KEYS[3], st, 'delivered')
redis.call('ZREM', KEYS[2], ARGV[1])
return {'delivered', st}
"""
)

#: A transient failure: log the attempt, park the lead in the retry schedule.
#: KEYS: lead, active, counts, attempts, retry; ARGV: id, now, token, attempt_json, due
SCHEDULE_RETRY = (
    _PRELUDE
    + """
local v = redis.call('HMGET', KEYS[1], 'state', 'deliveryToken')
if not v[1] then return {'missing'} end
redis.call('RPUSH', KEYS[4], ARGV[4])
redis.call('HINCRBY', KEYS[1], 'attemptCount', 1)
if v[1] ~= 'delivering' or v[2] ~= ARGV[3] then return {'lost', v[1]} end
redis.call('HSET', KEYS[1], 'nextAttemptAt', ARGV[5], 'updatedAt', ARGV[2])
redis.call('HDEL', KEYS[1], 'deliveryToken', 'leaseUntil')
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[5], ARGV[5], ARGV[1])
return {'scheduled', v[1]}
"""
)

#: Move due retries back to the active index; the caller then enqueues a delivery for
#: each. A crash before that enqueue is covered by the sweeper (the lead is active).
#: KEYS: retry, active; ARGV: now, limit, lead_prefix
CLAIM_DUE_RETRIES = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, id in ipairs(ids) do
  redis.call('ZREM', KEYS[1], id)
  redis.call('ZADD', KEYS[2], ARGV[1], id)
  redis.call('HDEL', ARGV[3] .. id, 'nextAttemptAt')
end
return ids
"""

#: Leads untouched past their lease: touch them again (so one sweep owns them) and
#: return id/state pairs for the caller to re-enqueue. An expired in-flight delivery
#: loses its token, so the worker that held it can no longer finish it.
#: KEYS: active; ARGV: now, cutoff, limit, lead_prefix
SWEEP = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for _, id in ipairs(ids) do
  local key = ARGV[4] .. id
  local st = redis.call('HGET', key, 'state')
  if st == 'received' or st == 'validated' or st == 'delivering' then
    redis.call('ZADD', KEYS[1], ARGV[1], id)
    if st == 'delivering' then redis.call('HDEL', key, 'deliveryToken', 'leaseUntil') end
    table.insert(out, id)
    table.insert(out, st)
  else
    redis.call('ZREM', KEYS[1], id)
  end
end
return out
"""

#: A dead lead goes back to `received` (attempt count reset, attempt log kept); its
#: dead-letter entry stays until the replay is enqueued (REPLAY_COMPLETE), so a crash
#: in between loses nothing: the sweeper sees an active lead.
#: KEYS: lead, active, counts, history; ARGV: id, now, history_json, payload ('' keeps)
REPLAY_PREPARE = (
    _PRELUDE
    + """
local st = redis.call('HGET', KEYS[1], 'state')
if not st then return {'missing'} end
if st ~= 'dead' then return {'skip', st} end
redis.call('HSET', KEYS[1], 'state', 'received', 'updatedAt', ARGV[2],
  'replayedAt', ARGV[2], 'attemptCount', '0')
if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'payload', ARGV[4]) end
redis.call('HDEL', KEYS[1], 'reason', 'error', 'failedAt', 'deliveryToken', 'leaseUntil',
  'nextAttemptAt', 'duplicateOf', 'request', 'dealerUuid')
redis.call('RPUSH', KEYS[4], ARGV[3])
redis.call('HINCRBY', KEYS[1], 'replays', 1)
move(KEYS[3], st, 'received')
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
return {'ok', st}
"""
)

#: After the replay is enqueued: drop the dead-letter entries, unless the lead has
#: died again meanwhile (then its fresh entry must stay, and only the one left under
#: a previous, different reason goes).
#: KEYS: lead, dlq, dlq:<reason>...; ARGV: id, the reason of each dlq:<reason> key
REPLAY_COMPLETE = """
local v = redis.call('HMGET', KEYS[1], 'state', 'reason')
if v[1] == 'dead' then
  for i = 3, #KEYS do
    if ARGV[i - 1] ~= v[2] then redis.call('ZREM', KEYS[i], ARGV[1]) end
  end
  return 0
end
for i = 2, #KEYS do redis.call('ZREM', KEYS[i], ARGV[1]) end
return 1
"""

#: Delete a dead lead for good: record, logs, indexes, counters.
#: KEYS: lead, active, counts, attempts, history, retry, dlq, dlq:<reason>...; ARGV: id
PURGE = (
    _PRELUDE
    + """
local st = redis.call('HGET', KEYS[1], 'state')
if not st then return 'missing' end
if st ~= 'dead' then return st end
redis.call('DEL', KEYS[1], KEYS[4], KEYS[5])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[6], ARGV[1])
for i = 7, #KEYS do redis.call('ZREM', KEYS[i], ARGV[1]) end
move(KEYS[3], st, nil)
return 'purged'
"""
)
