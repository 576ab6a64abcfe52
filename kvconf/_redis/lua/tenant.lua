#!lua
-- kvconf tenant: create, soft-delete or undelete a tenant, and log it.
--
-- KEYS: 1 meta, 2 rev, 3 epoch, 4 namespace set, 5 log.
-- ARGV: 1 op ("create", "delete", "undelete"), 2 now, 3 fresh epoch,
--       4 namespace hash prefix, 5 trash prefix, 6 tenant, 7 actor (JSON),
--       8 reason (JSON), 9 channel, 10 log bound, 11 audit op ("create",
--       "clone", "template", "soft_delete", "undelete").
-- A soft delete renames every namespace hash into the trash so reads miss
-- with one command, and marks the tenant deleted so writes are refused.
-- Each lifecycle change bumps the revision and logs and publishes a
-- "tenant" event (no key changes; watchers re-read the state), so the
-- tenant's change log says who did it and why. Reply: {'ok', revision}.

local op = ARGV[1]
local exists = redis.call('EXISTS', KEYS[1]) == 1
local deleted = exists and redis.call('HEXISTS', KEYS[1], 'deleted_at') == 1

local function logged()
  local rev = redis.call('INCR', KEYS[2])
  local epoch = redis.call('GET', KEYS[3])
  if not epoch then
    epoch = ARGV[3]
    redis.call('SET', KEYS[3], epoch)
  end
  local event = '{"tenant":"' .. ARGV[6] .. '","epoch":"' .. epoch .. '","revision":' .. rev
    .. ',"namespace":"*","actor":' .. ARGV[7] .. ',"reason":' .. ARGV[8]
    .. ',"ts":"' .. ARGV[2] .. '","type":"tenant","op":"' .. ARGV[11] .. '","changes":[]}'
  redis.call('ZADD', KEYS[5], rev, event)
  redis.call('ZREMRANGEBYRANK', KEYS[5], 0, -(tonumber(ARGV[10]) + 1))
  redis.call('SPUBLISH', ARGV[9], event)
  return {'ok', rev}
end

if op == 'create' then
  if exists then return {'exists', deleted and 1 or 0} end
  redis.call('HSET', KEYS[1], 'created_at', ARGV[2], 'schema_gen', '0')
  if redis.call('EXISTS', KEYS[3]) == 0 then redis.call('SET', KEYS[3], ARGV[3]) end
  if redis.call('EXISTS', KEYS[2]) == 0 then redis.call('SET', KEYS[2], '0') end
  return logged()
end
if not exists then return {'notenant'} end
local from, to = ARGV[4], ARGV[5]
if op == 'delete' then
  if deleted then return {'deleted'} end
  redis.call('HSET', KEYS[1], 'deleted_at', ARGV[2])
elseif op == 'undelete' then
  if not deleted then return {'ok', tonumber(redis.call('GET', KEYS[2]) or '0')} end
  redis.call('HDEL', KEYS[1], 'deleted_at')
  from, to = ARGV[5], ARGV[4]
else
  return redis.error_reply('unknown op ' .. op)
end
for _, ns in ipairs(redis.call('SMEMBERS', KEYS[4])) do
  if redis.call('EXISTS', from .. ns) == 1 then redis.call('RENAME', from .. ns, to .. ns) end
end
return logged()
