-- kvconf write: one change set of one namespace, all or nothing.
--
-- KEYS: 1 namespace hash, 1+i history of the i-th key.
-- ARGV: 1 tenant key prefix ("kvconf:{t}"), 2 namespace, 3 tenant,
--       4 actor (JSON string), 5 reason (JSON string), 6 now (ISO-8601),
--       7 "<schema generation> <may create 0/1> <history bound> <log bound>"
--       (schema generation -1: unchecked); then per key 3 values: key,
--       op+expected ("s-1": set, no precondition; "d3": delete if at
--       version 3; "s0": create only), value JSON.
-- The tenant's rev, epoch, log, meta and namespace-set keys are named from
-- the prefix: they share the hash tag of KEYS, so they live in the same slot
-- (legal on Cluster; the argument list stays short, which is most of a
-- client's cost per call).
--
-- Every check runs before the first write: Redis does not roll a script back.
-- Stored records end with their value, see kvconf/_codec.py.

local base = ARGV[1]
local K = {KEYS[1], base .. ':rev', base .. ':epoch', base .. ':log', base .. ':meta', base .. ':nss'}
local gen_arg, create_arg, keep_arg, log_arg = string.match(ARGV[7], '^(%S+) (%S+) (%S+) (%S+)$')
local n = #KEYS - 1
local want = {'hash', 'string', 'string', 'zset', 'hash', 'set'}
for i = 1, 6 do
  local t = redis.call('TYPE', K[i]).ok
  if t ~= 'none' and t ~= want[i] then return {'wrongtype', K[i]} end
end
for i = 1, n do
  local t = redis.call('TYPE', KEYS[1 + i]).ok
  if t ~= 'none' and t ~= 'zset' then return {'wrongtype', KEYS[1 + i]} end
end

local created = 0
if redis.call('EXISTS', K[5]) == 0 then
  if create_arg ~= '1' then return {'notenant'} end
  created = 1
elseif redis.call('HEXISTS', K[5], 'deleted_at') == 1 then
  return {'deleted'}
end
if gen_arg ~= '-1' then
  local gen = redis.call('HGET', K[5], 'schema_gen') or '0'
  if gen ~= gen_arg then return {'schema', gen} end
end
local rev_raw = redis.call('GET', K[2])
if rev_raw and not tonumber(rev_raw) then return {'wrongtype', K[2]} end

local conflicts, missing, olds, lasts = {}, {}, {}, {}
for i = 1, n do
  local b = 7 + (i - 1) * 3
  local key, op = ARGV[b + 1], string.sub(ARGV[b + 2], 1, 1)
  local expected = tonumber(string.sub(ARGV[b + 2], 2))
  local last = 0
  local top = redis.call('ZREVRANGE', KEYS[1 + i], 0, 0, 'WITHSCORES')
  if top[2] then last = tonumber(top[2]) end
  local cur = 0
  local entry = redis.call('HGET', K[1], key)
  if entry then
    cur = tonumber(string.match(entry, '^{"version":(%d+),')) or last
    if cur > last then last = cur end
  end
  if expected >= 0 and expected ~= cur then
    conflicts[#conflicts + 1] = '{"key":"' .. key .. '","expected":' .. expected .. ',"actual":' .. cur .. '}'
  end
  if op == 'd' and not entry then missing[#missing + 1] = '"' .. key .. '"' end
  olds[i] = cur
  lasts[i] = last
end
if #conflicts > 0 then return {'conflict', '[' .. table.concat(conflicts, ',') .. ']'} end
if #missing > 0 then return {'missing', '[' .. table.concat(missing, ',') .. ']'} end

-- From here on: writes only.
local rev = redis.call('INCR', K[2])
local epoch = redis.call('GET', K[3])
if not epoch then
  local t = redis.call('TIME')
  epoch = string.format('%x%06x%x', tonumber(t[1]), tonumber(t[2]), rev)
  redis.call('SET', K[3], epoch)
end
if created == 1 then redis.call('HSET', K[5], 'created_at', ARGV[6]) end
redis.call('SADD', K[6], ARGV[2])

local actor, reason, now = ARGV[4], ARGV[5], ARGV[6]
local keep = tonumber(keep_arg)
local meta = ',"revision":' .. rev .. ',"updated_at":"' .. now .. '","updated_by":' .. actor
local changes, out = {}, {'ok', rev, epoch, created}
for i = 1, n do
  local b = 7 + (i - 1) * 3
  local key, op, value = ARGV[b + 1], string.sub(ARGV[b + 2], 1, 1), ARGV[b + 3]
  local v = lasts[i] + 1
  local head = '{"version":' .. v .. meta
  local deleted = 'false'
  if op == 'd' then
    deleted = 'true'
    value = 'null'
    redis.call('HDEL', K[1], key)
  else
    redis.call('HSET', K[1], key, head .. ',"value":' .. value .. '}')
  end
  redis.call('ZADD', KEYS[1 + i], v,
    head .. ',"deleted":' .. deleted .. ',"reason":' .. reason .. ',"value":' .. value .. '}')
  redis.call('ZREMRANGEBYRANK', KEYS[1 + i], 0, -(keep + 1))
  changes[i] = '{"key":"' .. key .. '","version":' .. v .. ',"old_version":' .. olds[i]
    .. ',"deleted":' .. deleted .. ',"value":' .. value .. '}'
  out[4 + i] = v
end

local event = '{"tenant":"' .. ARGV[3] .. '","epoch":"' .. epoch .. '","revision":' .. rev
  .. ',"namespace":"' .. ARGV[2] .. '","actor":' .. actor .. ',"reason":' .. reason
  .. ',"ts":"' .. now .. '","type":"change","changes":[' .. table.concat(changes, ',') .. ']}'
redis.call('ZADD', K[4], rev, event)
redis.call('ZREMRANGEBYRANK', K[4], 0, -(tonumber(log_arg) + 1))
redis.call('SPUBLISH', base .. ':changes', event)
return out
