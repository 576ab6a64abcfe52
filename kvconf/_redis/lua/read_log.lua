-- kvconf read_log: change events after a revision, with what trimming tells.
--
-- KEYS: 1 rev, 2 log, 3 meta.
-- ARGV: 1 after this revision, 2 at most this many events.
-- Returns {exists (0/1/2 deleted), current rev, oldest revision kept (0: empty log), events...}

if redis.call('EXISTS', KEYS[3]) == 0 then return {0} end
if redis.call('HEXISTS', KEYS[3], 'deleted_at') == 1 then return {2} end
local rev = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
local oldest = 0
local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
if first[2] then oldest = tonumber(first[2]) end
local out = {1, rev, oldest}
local events = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. ARGV[1], '+inf', 'LIMIT', 0, tonumber(ARGV[2]))
for _, e in ipairs(events) do out[#out + 1] = e end
return out
