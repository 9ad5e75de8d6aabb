"""The breaker rules in Lua, and the lead moves every dealer script shares.

`pipeline/breaker.py` is the specification; these functions are the same rules,
function for function (`b_gate` is `gate`, `b_answer` is `after_answer`, `fan_out`
is `unauthorized_elsewhere` and `credentials_work` over every dealer), because every
worker must read and change a dealer's breaker in one atomic step.
`tests/integration/test_dealer_store.py` drives both with the same random event
sequences and requires the same breaker. The scripts themselves are
`store/dealer_scripts.py`.
"""

from __future__ import annotations

from store.scripts import PRELUDE as LEAD_PRELUDE

#: The dealer hash's fields: the breaker (`pipeline.breaker.Breaker`, one field per
#: attribute), the rate's next free slot (`tat`) and the probe rotation (`probes`).
BREAKER_FIELDS = (
    "state",
    "reason",
    "failures",
    "openedAt",
    "nextProbeAt",
    "cooldown",
    "probe",
    "probeUntil",
    "note",
    "tat",
    "probes",
)
#: The dealer hash's field names as a Lua table `B` (as `F` is the lead record's).
BREAKER_TABLE = "local B = {" + ", ".join(f"{f} = '{f}'" for f in BREAKER_FIELDS) + "}\n"

# Helpers prepended to every script, after the lead scripts' own (`move`, `emit_to`).
# `P` is the breaker policy (failures, cooldown, max): the same rules as
# pipeline/breaker.py, function for function. Lead record fields are `F.<name>`
# (pipeline/record_fields.py), dealer hash fields `B.<name>`.
PRELUDE = (
    LEAD_PRELUDE
    + BREAKER_TABLE
    + """
local function num(x) return string.format('%.17g', x) end
local function b_closed()
  return {state = 'closed', reason = false, failures = 0, openedAt = false,
    nextProbeAt = false, cooldown = 0, probe = false, probeUntil = false, note = ''}
end
local function b_load(key)
  local v = redis.call('HMGET', key, B.state, B.reason, B.failures, B.openedAt,
    B.nextProbeAt, B.cooldown, B.probe, B.probeUntil, B.note)
  return {state = v[1] or 'closed', reason = v[2] or false, failures = tonumber(v[3] or '0'),
    openedAt = v[4] and tonumber(v[4]) or false, nextProbeAt = v[5] and tonumber(v[5]) or false,
    cooldown = tonumber(v[6] or '0'), probe = v[7] or false,
    probeUntil = v[8] and tonumber(v[8]) or false, note = v[9] or ''}
end
local function b_save(key, b)
  local set, del = {B.state, b.state, B.failures, tostring(b.failures), B.cooldown,
    num(b.cooldown)}, {}
  local function put(name, value, text)
    if value then
      table.insert(set, name); table.insert(set, text or value)
    else
      table.insert(del, name)
    end
  end
  put(B.reason, b.reason)
  put(B.openedAt, b.openedAt, b.openedAt and num(b.openedAt))
  put(B.nextProbeAt, b.nextProbeAt, b.nextProbeAt and num(b.nextProbeAt))
  put(B.probe, b.probe)
  put(B.probeUntil, b.probeUntil, b.probeUntil and num(b.probeUntil))
  put(B.note, b.note ~= '' and b.note)
  redis.call('HSET', key, unpack(set))
  if #del > 0 then redis.call('HDEL', key, unpack(del)) end
end
-- A breaker closed with no failures before and after an answer is not written again:
-- the common case, a 2xx, costs Redis one HMGET and no write.
local function quiet(b) return b.state == 'closed' and b.failures == 0 end
local function first_cd(P) return math.min(P.cooldown, P.max) end
local function next_cd(P, cur) return math.min(math.max(cur, first_cd(P)) * 2, P.max) end
local function b_open(b, reason, now, cooldown)
  if b.state == 'closed' then b.openedAt = now end
  b.state = 'open'; b.reason = reason; b.nextProbeAt = now + cooldown
  b.cooldown = cooldown; b.probe = false; b.probeUntil = false
  return b
end
local function probe_due(b, now)
  if b.state == 'open' then return (not b.nextProbeAt) or now >= b.nextProbeAt end
  if b.state == 'half_open' then return (not b.probeUntil) or now >= b.probeUntil end
  return false
end
local function b_elect(b, id, now, lease)
  b.state = 'half_open'; b.probe = id; b.probeUntil = now + lease
end
local function b_gate(b, id, now, lease)
  if b.state == 'closed' then return 'go' end
  if b.state == 'half_open' and b.probe == id then b.probeUntil = now + lease; return 'probe' end
  if probe_due(b, now) then b_elect(b, id, now, lease); return 'probe' end
  return 'hold'
end
local function b_answer(b, answer, id, now, P)
  local is_probe = b.state == 'half_open' and b.probe == id
  if answer == 'delivered' then
    if b.state == 'paused' then b.failures = 0; return b end
    return b_closed()
  end
  if b.state == 'paused' then
    if answer == 'transient' then b.failures = b.failures + 1 end
    return b
  end
  if answer == 'rejected' then
    if is_probe then return b_closed() end
    return b
  end
  if answer == 'transient' then
    b.failures = b.failures + 1
    if b.state == 'closed' and b.failures >= P.failures then
      return b_open(b, 'failures', now, first_cd(P))
    end
    if is_probe then return b_open(b, b.reason or 'failures', now, next_cd(P, b.cooldown)) end
    return b
  end
  if b.state == 'closed' then return b_open(b, answer, now, first_cd(P)) end
  if is_probe then return b_open(b, answer, now, next_cd(P, b.cooldown)) end
  b.reason = answer
  return b
end
-- Side effects of an answer on the other dealers: a 401 opens every breaker; a 2xx
-- while held for 401 makes every other such dealer probe at once.
local function fan_out(index, dprefix, self_uuid, answer, before_reason, now, P)
  if answer ~= 'unauthorized' and not (answer == 'delivered'
      and before_reason == 'unauthorized') then return end
  for _, uuid in ipairs(redis.call('HKEYS', index)) do
    if uuid ~= self_uuid then
      local key = dprefix .. redis.sha1hex(uuid)
      local o = b_load(key)
      if answer == 'unauthorized' and o.state ~= 'paused' then
        if o.state == 'closed' then b_open(o, 'unauthorized', now, first_cd(P))
        else o.reason = 'unauthorized' end
        b_save(key, o)
      elseif answer == 'delivered' and o.state == 'open' and o.reason == 'unauthorized' then
        o.nextProbeAt = now
        b_save(key, o)
      end
    end
  end
end
local function policy(failures, cooldown, max)
  return {failures = tonumber(failures), cooldown = tonumber(cooldown), max = tonumber(max)}
end
-- A lead leaves the delivery path and waits in its dealer's held set.
local function hold(lkey, id, st, now, reason, hkey, holding, uuid, origin, active, counts)
  redis.call('HSET', lkey, F.state, 'held', F.heldReason, reason, F.heldAt, num(now),
    F.updatedAt, num(now))
  redis.call('HDEL', lkey, F.deliveryToken, F.leaseUntil, F.nextAttemptAt, F.paceSlot)
  if st ~= 'held' then move(counts, st, 'held') end
  redis.call('ZREM', active, id)
  redis.call('ZADD', hkey, origin, id)
  redis.call('SADD', holding, uuid)
end
-- A held lead becomes a dead letter (expired, drained), with its `lead.dead`
-- notification (`emit_to`, store/scripts.py); false when it is not held.
-- D: {counts, dlq, dlq_reason, counters, lettered, schedule, notify_counts, notify_prefix}
local function kill_held(lkey, id, reason, now, err, D)
  local v = redis.call('HMGET', lkey, F.state, F.txnKey)
  if v[1] ~= 'held' then return false end
  enter_dead(lkey, id, 'held', reason, num(now), D.counts, D.dlq, D.dlq_reason, v[2],
    F.error, err)
  redis.call('HINCRBY', D.counters, D.lettered, 1)
  local event = D.notify_prefix .. 'msg_' .. redis.sha1hex(id .. ':' .. reason .. ':' .. num(now))
  emit_to('lead.dead', lkey, id, num(now), D.schedule, D.notify_counts,
    lkey .. ':notifications', event)
  return true
end
-- A held lead goes back on the delivery path (the caller enqueues a delivery).
local function release(lkey, id, now, active, counts)
  if redis.call('HGET', lkey, F.state) ~= 'held' then return false end
  redis.call('HSET', lkey, F.state, 'delivering', F.updatedAt, num(now))
  redis.call('HDEL', lkey, F.heldReason, F.heldAt)
  move(counts, 'held', 'delivering')
  redis.call('ZADD', active, now, id)
  return true
end
"""
)
