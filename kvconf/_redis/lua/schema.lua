#!lua
-- kvconf schema: replace (or remove) the schema of one namespace.
--
-- KEYS: 1 schema hash, 2 meta, 3 rev, 4 epoch, 5 log.
-- ARGV: 1 namespace, 2 schema JSON ("" removes it), 3 expected schema
--       generation, 4 tenant, 5 actor (JSON), 6 reason (JSON), 7 now,
--       8 fresh epoch, 9 channel, 10 log bound.
-- Creates the tenant if it does not exist (a schema write is a write).
-- Bumps the schema generation and the tenant revision, logs and publishes a
-- "schema" event so watchers reload schemas.

local created = 0
if redis.call('EXISTS', KEYS[2]) == 0 then
  created = 1
  redis.call('HSET', KEYS[2], 'created_at', ARGV[7])
elseif redis.call('HEXISTS', KEYS[2], 'deleted_at') == 1 then
  return {'deleted'}
end
local gen = redis.call('HGET', KEYS[2], 'schema_gen') or '0'
if gen ~= ARGV[3] then return {'schema', gen} end
if ARGV[2] == '' then
  redis.call('HDEL', KEYS[1], ARGV[1])
else
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end
local newgen = redis.call('HINCRBY', KEYS[2], 'schema_gen', 1)
local rev = redis.call('INCR', KEYS[3])
local epoch = redis.call('GET', KEYS[4])
if not epoch then
  epoch = ARGV[8]
  redis.call('SET', KEYS[4], epoch)
end
local event = '{"tenant":"' .. ARGV[4] .. '","epoch":"' .. epoch .. '","revision":' .. rev
  .. ',"namespace":"' .. ARGV[1] .. '","actor":' .. ARGV[5] .. ',"reason":' .. ARGV[6]
  .. ',"ts":"' .. ARGV[7] .. '","type":"schema","changes":[]}'
redis.call('ZADD', KEYS[5], rev, event)
redis.call('ZREMRANGEBYRANK', KEYS[5], 0, -(tonumber(ARGV[10]) + 1))
redis.call('SPUBLISH', ARGV[9], event)
return {'ok', rev, epoch, newgen, created}
