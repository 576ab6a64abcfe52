-- kvconf read_state: a tenant's current state at one revision.
--
-- KEYS: 1 rev, 2 epoch, 3 meta, 4 namespace set.
-- ARGV: 1 namespace hash prefix ("kvconf:{t}:ns:"), then the namespaces to
--       read (none: every namespace of the tenant).
-- Returns {exists (0/1/2 deleted), rev, epoch, schema_gen, ns1, fields1, ns2, ...}
-- where fields is the flat HGETALL reply.
-- The namespace hashes are named from the namespace set; they carry the same
-- hash tag as KEYS, so they live in the same slot.

if redis.call('EXISTS', KEYS[3]) == 0 then return {0} end
if redis.call('HEXISTS', KEYS[3], 'deleted_at') == 1 then return {2} end
local out = {
  1,
  tonumber(redis.call('GET', KEYS[1]) or '0') or 0,
  redis.call('GET', KEYS[2]) or '',
  tonumber(redis.call('HGET', KEYS[3], 'schema_gen') or '0') or 0,
}
local names = {}
if #ARGV > 1 then
  for i = 2, #ARGV do names[#names + 1] = ARGV[i] end
else
  names = redis.call('SMEMBERS', KEYS[4])
end
for _, ns in ipairs(names) do
  out[#out + 1] = ns
  out[#out + 1] = redis.call('HGETALL', ARGV[1] .. ns)
end
return out
