#!lua
-- kvconf tenant: create, soft-delete or undelete a tenant.
--
-- KEYS: 1 meta, 2 rev, 3 epoch, 4 namespace set.
-- ARGV: 1 op ("create", "delete", "undelete"), 2 now, 3 fresh epoch,
--       4 namespace hash prefix, 5 trash prefix.
-- A soft delete renames every namespace hash into the trash so reads miss
-- with one command, and marks the tenant deleted so writes are refused.

local op = ARGV[1]
local exists = redis.call('EXISTS', KEYS[1]) == 1
local deleted = exists and redis.call('HEXISTS', KEYS[1], 'deleted_at') == 1
if op == 'create' then
  if exists then return {'exists', deleted and 1 or 0} end
  redis.call('HSET', KEYS[1], 'created_at', ARGV[2], 'schema_gen', '0')
  if redis.call('EXISTS', KEYS[3]) == 0 then redis.call('SET', KEYS[3], ARGV[3]) end
  if redis.call('EXISTS', KEYS[2]) == 0 then redis.call('SET', KEYS[2], '0') end
  return {'ok'}
end
if not exists then return {'notenant'} end
local from, to = ARGV[4], ARGV[5]
if op == 'delete' then
  if deleted then return {'deleted'} end
  redis.call('HSET', KEYS[1], 'deleted_at', ARGV[2])
elseif op == 'undelete' then
  if not deleted then return {'ok'} end
  redis.call('HDEL', KEYS[1], 'deleted_at')
  from, to = ARGV[5], ARGV[4]
else
  return redis.error_reply('unknown op ' .. op)
end
for _, ns in ipairs(redis.call('SMEMBERS', KEYS[4])) do
  if redis.call('EXISTS', from .. ns) == 1 then redis.call('RENAME', from .. ns, to .. ns) end
end
return {'ok'}
