-- kvconf write: one change set of one namespace, all or nothing.
--
-- KEYS: 1 namespace hash, 2 rev, 3 epoch, 4 log, 5 meta, 6 namespace set,
--       6+i history of the i-th key.
-- ARGV: 1 namespace, 2 tenant, 3 actor (JSON string), 4 reason (JSON string),
--       5 now (ISO-8601), 6 history bound, 7 log bound, 8 fresh epoch,
--       9 channel, 10 expected schema generation, 11 may create the tenant
--       ("1"/"0"), 12 n; then per key 4 values: key, op ("s" set, "d"
--       delete), expected version (-1: no precondition), value JSON.
--
-- Every check runs before the first write: Redis does not roll a script back.
-- Stored records end with their value, see kvconf/_codec.py.

local n = tonumber(ARGV[12])
local want = {'hash', 'string', 'string', 'zset', 'hash', 'set'}
for i = 1, 6 do
  local t = redis.call('TYPE', KEYS[i]).ok
  if t ~= 'none' and t ~= want[i] then return {'wrongtype', KEYS[i]} end
end
for i = 1, n do
  local t = redis.call('TYPE', KEYS[6 + i]).ok
  if t ~= 'none' and t ~= 'zset' then return {'wrongtype', KEYS[6 + i]} end
end

local created = 0
if redis.call('EXISTS', KEYS[5]) == 0 then
  if ARGV[11] ~= '1' then return {'notenant'} end
  created = 1
elseif redis.call('HEXISTS', KEYS[5], 'deleted_at') == 1 then
  return {'deleted'}
end
if ARGV[10] ~= '-1' then
  local gen = redis.call('HGET', KEYS[5], 'schema_gen') or '0'
  if gen ~= ARGV[10] then return {'schema', gen} end
end
local rev_raw = redis.call('GET', KEYS[2])
if rev_raw and not tonumber(rev_raw) then return {'wrongtype', KEYS[2]} end

local conflicts, missing, olds, lasts = {}, {}, {}, {}
for i = 1, n do
  local b = 12 + (i - 1) * 4
  local key, op, expected = ARGV[b + 1], ARGV[b + 2], tonumber(ARGV[b + 3])
  local last = 0
  local top = redis.call('ZREVRANGE', KEYS[6 + i], 0, 0, 'WITHSCORES')
  if top[2] then last = tonumber(top[2]) end
  local cur = 0
  local entry = redis.call('HGET', KEYS[1], key)
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
local rev = redis.call('INCR', KEYS[2])
local epoch = redis.call('GET', KEYS[3])
if not epoch then
  epoch = ARGV[8]
  redis.call('SET', KEYS[3], epoch)
end
if created == 1 then redis.call('HSET', KEYS[5], 'created_at', ARGV[5]) end
redis.call('SADD', KEYS[6], ARGV[1])

local actor, reason, now = ARGV[3], ARGV[4], ARGV[5]
local keep = tonumber(ARGV[6])
local meta = ',"revision":' .. rev .. ',"updated_at":"' .. now .. '","updated_by":' .. actor
local changes, out = {}, {'ok', rev, epoch, created}
for i = 1, n do
  local b = 12 + (i - 1) * 4
  local key, op, value = ARGV[b + 1], ARGV[b + 2], ARGV[b + 4]
  local v = lasts[i] + 1
  local head = '{"version":' .. v .. meta
  local deleted = 'false'
  if op == 'd' then
    deleted = 'true'
    value = 'null'
    redis.call('HDEL', KEYS[1], key)
  else
    redis.call('HSET', KEYS[1], key, head .. ',"value":' .. value .. '}')
  end
  redis.call('ZADD', KEYS[6 + i], v,
    head .. ',"deleted":' .. deleted .. ',"reason":' .. reason .. ',"value":' .. value .. '}')
  redis.call('ZREMRANGEBYRANK', KEYS[6 + i], 0, -(keep + 1))
  changes[i] = '{"key":"' .. key .. '","version":' .. v .. ',"old_version":' .. olds[i]
    .. ',"deleted":' .. deleted .. ',"value":' .. value .. '}'
  out[4 + i] = v
end

local event = '{"tenant":"' .. ARGV[2] .. '","epoch":"' .. epoch .. '","revision":' .. rev
  .. ',"namespace":"' .. ARGV[1] .. '","actor":' .. actor .. ',"reason":' .. reason
  .. ',"ts":"' .. now .. '","type":"change","changes":[' .. table.concat(changes, ',') .. ']}'
redis.call('ZADD', KEYS[4], rev, event)
redis.call('ZREMRANGEBYRANK', KEYS[4], 0, -(tonumber(ARGV[7]) + 1))
redis.call('SPUBLISH', ARGV[9], event)
return out
