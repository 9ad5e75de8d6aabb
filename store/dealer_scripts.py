"""Lua for dealer health: the delivery guard with its breaker and rate, held leads.

The breaker rules are `pipeline/breaker.py`, written in Lua in `store/dealer_lua.py`
(every worker must read and change a dealer's breaker in one atomic step); each script
here is that prelude plus its own body.

Dealer keys (store/keys.py): `<prefix>:dealer:<sha1(uuid)>` is the breaker hash (the
fields below, plus `tat` for the rate and `probes` for probe rotation), with `:held`
appended the sorted set of held lead ids scored by their age origin (receipt, or the
last replay), oldest first. Lua builds a dealer's key with `redis.sha1hex` exactly as
Python does, so no raw dealer name ever becomes part of a key.

Record fields these scripts use besides the lead scripts' own: `heldReason`, `heldAt`
(set while `held`), `paceSlot` (the delivery slot the rate reserved for the lead).
"""

from __future__ import annotations

from store.dealer_lua import BREAKER_FIELDS, BREAKER_TABLE, PRELUDE

__all__ = [
    "AFTER_FAILURE",
    "ANSWER",
    "BREAKER_FIELDS",
    "BREAKER_TABLE",
    "DRAIN",
    "GUARD",
    "PAUSE",
    "RELEASE",
    "RESUME",
]

#: The delivery guard: claim a lead for one POST, or say why not. Besides the lead's
#: own checks (state, a live delivery's lease, a retry not yet due) it ends a lead past
#: its age limit, holds it when its dealer's breaker is not closed (or elects it as
#: the probe), and reserves its slot under the dealer's rate: a lead whose slot is later
#: waits in the retry schedule for it, consuming no attempt.
#: The POST cap: on `go` the attempt is counted here, before the POST, so nothing that
#: raises after a POST (a worker killed, a store error) can make a lead POSTed more
#: than `max_attempts` times. A lead that has used them all (its last outcome never
#: recorded, or held after its last one) goes dead, reason exhausted, with its
#: `lead.dead` notification, instead of being posted again.
#: KEYS: lead, active, counts, dealers, rates, retry, holding, dlq, dlq:exhausted,
#: notify keys (4, see `emit`)
#: ARGV: id, now, token, lease, dealer_prefix, max_attempts, max_age_seconds
GUARD = (
    PRELUDE
    + """
local v = redis.call('HMGET', KEYS[1], F.state, F.deliveryToken, F.leaseUntil,
  F.nextAttemptAt, F.dealerUuid, F.request, F.attemptCount, F.createdAt, F.replayedAt,
  F.paceSlot, F.txnKey)
local st = v[1]
if not st then return {'missing'} end
if st ~= 'validated' and st ~= 'delivering' then return {'skip', st} end
local now = tonumber(ARGV[2])
if v[2] and tonumber(v[3] or '0') > now then return {'busy', st} end
if v[4] and tonumber(v[4]) > now then return {'early', st} end
local origin = tonumber(v[9] or v[8] or ARGV[2])
local max_age = tonumber(ARGV[7])
if max_age > 0 and now - origin >= max_age then return {'expired', st} end
local count = tonumber(v[7] or '0')
if count >= tonumber(ARGV[6]) then
  enter_dead(KEYS[1], ARGV[1], st, 'exhausted', ARGV[2], KEYS[3], KEYS[8], KEYS[9], v[11],
    F.error, cjson.encode({message = 'gave up after ' .. count
      .. ' attempts; the outcome of the last one was never recorded, or its dealer held'
      .. ' it after its last one (LEADPIPE_RETRY_MAX_ATTEMPTS)'}))
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('ZREM', KEYS[6], ARGV[1])
  emit('lead.dead', KEYS[1], ARGV[1], ARGV[2], 10)
  return {'exhausted', st}
end
local uuid = v[5] or ''
local probe = '0'
if uuid ~= '' then
  local dkey = ARGV[5] .. redis.sha1hex(uuid)
  redis.call('HSETNX', KEYS[4], uuid, ARGV[2])
  local b = b_load(dkey)
  local decision = b_gate(b, ARGV[1], now, tonumber(ARGV[4]))
  if decision == 'hold' then
    hold(KEYS[1], ARGV[1], st, now, b.reason or b.state, dkey .. ':held', KEYS[7], uuid,
      origin, KEYS[2], KEYS[3])
    return {'held', st, b.reason or b.state}
  end
  if decision == 'probe' then
    probe = '1'
    b_save(dkey, b)
  end
  local rate = tonumber(redis.call('HGET', KEYS[5], uuid) or '0')
  if rate and rate > 0 then
    local slot = tonumber(v[10] or '')
    if not (slot and slot <= now) then
      local tat = tonumber(redis.call('HGET', dkey, B.tat) or '0')
      slot = math.max(tat, now)
      redis.call('HSET', dkey, B.tat, num(slot + 1 / rate))
      if slot > now and probe == '0' then
        redis.call('HSET', KEYS[1], F.state, 'delivering', F.paceSlot, num(slot),
          F.nextAttemptAt, num(slot), F.updatedAt, ARGV[2])
        redis.call('HDEL', KEYS[1], F.deliveryToken, F.leaseUntil)
        if st ~= 'delivering' then move(KEYS[3], st, 'delivering') end
        redis.call('ZREM', KEYS[2], ARGV[1])
        redis.call('ZADD', KEYS[6], slot, ARGV[1])
        return {'paced', st, num(slot)}
      end
    end
  end
end
redis.call('HSET', KEYS[1], F.state, 'delivering', F.deliveryToken, ARGV[3],
  F.leaseUntil, num(now + tonumber(ARGV[4])), F.updatedAt, ARGV[2],
  F.attemptCount, count + 1)
redis.call('HDEL', KEYS[1], F.nextAttemptAt, F.paceSlot)
if st ~= 'delivering' then move(KEYS[3], st, 'delivering') end
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
return {'go', uuid, v[6] or '', tostring(count), v[8] or ARGV[2], probe}
"""
)

#: What one answer does to the dealer's breaker (and, for 401, to every breaker);
#: run in the same pipeline as the lead's own transition (delivered, dead).
#: KEYS: dealer, dealers, counters; ARGV: dealer_prefix, uuid, id, now, answer,
#: failures, cooldown, max_cooldown
ANSWER = (
    PRELUDE
    + """
local P = policy(ARGV[6], ARGV[7], ARGV[8])
local now = tonumber(ARGV[4])
redis.call('HSETNX', KEYS[2], ARGV[2], ARGV[4])
local b = b_load(KEYS[1])
local before = b.reason
local was_quiet = quiet(b)
if b.state == 'half_open' and b.probe == ARGV[3] then
  redis.call('HINCRBY', KEYS[3], 'probes.' .. ARGV[5], 1)
end
b = b_answer(b, ARGV[5], ARGV[3], now, P)
if not (was_quiet and quiet(b)) then b_save(KEYS[1], b) end
fan_out(KEYS[2], ARGV[1], ARGV[2], ARGV[5], before, now, P)
return b.state
"""
)

#: A POST failed without ending the lead (transient with attempts left, 401, 403):
#: log the attempt (the guard counted it, before the POST), apply the answer to the
#: breaker(s), then hold the lead when its breaker is not closed, or else park it in
#: the retry schedule until `due`.
#: KEYS: lead, active, counts, attempts, retry, dealer, dealers, counters, holding
#: ARGV: id, now, token, attempt_json, due, dealer_prefix, uuid, answer,
#: failures, cooldown, max_cooldown
AFTER_FAILURE = (
    PRELUDE
    + """
local v = redis.call('HMGET', KEYS[1], F.state, F.deliveryToken, F.createdAt, F.replayedAt)
if not v[1] then return {'missing'} end
redis.call('RPUSH', KEYS[4], ARGV[4])
local P = policy(ARGV[9], ARGV[10], ARGV[11])
local now = tonumber(ARGV[2])
redis.call('HSETNX', KEYS[7], ARGV[7], ARGV[2])
local b = b_load(KEYS[6])
local before = b.reason
if b.state == 'half_open' and b.probe == ARGV[1] then
  redis.call('HINCRBY', KEYS[8], 'probes.' .. ARGV[8], 1)
end
b = b_answer(b, ARGV[8], ARGV[1], now, P)
b_save(KEYS[6], b)
fan_out(KEYS[7], ARGV[6], ARGV[7], ARGV[8], before, now, P)
if v[1] ~= 'delivering' or v[2] ~= ARGV[3] then return {'lost', v[1]} end
if b.state ~= 'closed' or ARGV[5] == '' then
  local reason = b.reason or b.state
  hold(KEYS[1], ARGV[1], v[1], now, reason, KEYS[6] .. ':held', KEYS[9], ARGV[7],
    tonumber(v[4] or v[3] or ARGV[2]), KEYS[2], KEYS[3])
  return {'held', v[1], reason}
end
park_for_retry(KEYS[1], ARGV[1], ARGV[2], ARGV[5], KEYS[2], KEYS[5])
return {'scheduled', v[1]}
"""
)

#: The releaser's tick, over the dealers that hold leads: held leads past the age limit
#: become dead `expired`; a closed breaker releases up to `batch` held leads, oldest
#: first; an open one whose cooldown has passed (or whose probe was lost) releases one,
#: elected as its probe, rotating through the held leads. Returns the lead ids to
#: enqueue for delivery (a crash before that is covered by the sweeper: they are active).
#: KEYS: holding, active, counts, dlq, rates, counters, notify schedule, notify counts
#: ARGV: now, dealer_prefix, key_prefix (for `lead_key`), lease, batch, max_age,
#: dlq_prefix, expired_json, expired_counter, notification_prefix
RELEASE = (
    PRELUDE
    + """
local now = tonumber(ARGV[1])
local D = {counts = KEYS[3], dlq = KEYS[4], dlq_reason = ARGV[7] .. 'expired',
  counters = KEYS[6], lettered = ARGV[9], schedule = KEYS[7], notify_counts = KEYS[8],
  notify_prefix = ARGV[10]}
local batch = tonumber(ARGV[5])
local max_age = tonumber(ARGV[6])
local out = {}
for _, uuid in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local dkey = ARGV[2] .. redis.sha1hex(uuid)
  local hkey = dkey .. ':held'
  if max_age > 0 then
    for _, id in ipairs(redis.call('ZRANGEBYSCORE', hkey, '-inf', num(now - max_age),
        'LIMIT', 0, batch)) do
      redis.call('ZREM', hkey, id)
      kill_held(lead_key(ARGV[3], id), id, 'expired', now, ARGV[8], D)
    end
  end
  local n = redis.call('ZCARD', hkey)
  if n == 0 then
    redis.call('SREM', KEYS[1], uuid)
  else
    local b = b_load(dkey)
    if b.state == 'closed' then
      local take = batch
      local rate = tonumber(redis.call('HGET', KEYS[5], uuid) or '0')
      if rate and rate > 0 then
        local tat = tonumber(redis.call('HGET', dkey, B.tat) or '0')
        take = 0
        if tat <= now + 1 then take = math.max(1, math.floor(rate / 4)) end
      end
      if take > 0 then
        for _, id in ipairs(redis.call('ZRANGE', hkey, 0, take - 1)) do
          redis.call('ZREM', hkey, id)
          if release(lead_key(ARGV[3], id), id, now, KEYS[2], KEYS[3]) then
            table.insert(out, id)
          end
        end
      end
    elseif probe_due(b, now) then
      local turn = redis.call('HINCRBY', dkey, B.probes, 1)
      local id = redis.call('ZRANGE', hkey, turn % n, turn % n)[1]
      redis.call('ZREM', hkey, id)
      if release(lead_key(ARGV[3], id), id, now, KEYS[2], KEYS[3]) then
        b_elect(b, id, now, tonumber(ARGV[4]))
        b_save(dkey, b)
        table.insert(out, id)
      end
    end
  end
end
return out
"""
)

#: An operator pauses a dealer (idempotent: a paused dealer only takes a new note).
#: KEYS: dealer, dealers; ARGV: uuid, now, note. Returns the state before.
PAUSE = (
    PRELUDE
    + """
redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2])
local b = b_load(KEYS[1])
local before = b.state
if b.state == 'paused' then
  if ARGV[3] ~= '' then b.note = ARGV[3] end
else
  local failures = b.failures
  b = b_closed()
  b.state = 'paused'; b.reason = 'operator'; b.failures = failures
  b.openedAt = tonumber(ARGV[2]); b.note = ARGV[3]
end
b_save(KEYS[1], b)
return before
"""
)

#: An operator closes a dealer's breaker (from any state); the releaser then lets its
#: held leads go at the dealer's rate. KEYS: dealer, dealers; ARGV: uuid, now.
RESUME = (
    PRELUDE
    + """
redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2])
local before = b_load(KEYS[1]).state
b_save(KEYS[1], b_closed())
return before
"""
)

#: Held leads of a dealer become dead letters, reason `drained` (up to `limit`).
#: KEYS: held, counts, dlq, dlq:drained, counters, notify schedule, notify counts
#: ARGV: now, key_prefix (for `lead_key`), limit, error_json, drained_counter, notification_prefix
DRAIN = (
    PRELUDE
    + """
local now = tonumber(ARGV[1])
local D = {counts = KEYS[2], dlq = KEYS[3], dlq_reason = KEYS[4], counters = KEYS[5],
  lettered = ARGV[5], schedule = KEYS[6], notify_counts = KEYS[7], notify_prefix = ARGV[6]}
local n = 0
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[3]) - 1)) do
  redis.call('ZREM', KEYS[1], id)
  if kill_held(lead_key(ARGV[2], id), id, 'drained', now, ARGV[4], D) then
    n = n + 1
  end
end
return n
"""
)
