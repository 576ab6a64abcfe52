-- kvconf snapshot_read: everything of one tenant, captured at one revision.
--
-- KEYS: 1 rev, 2 epoch, 3 meta, 4 namespace set, 5 schema hash, 6 log.
-- ARGV: 1 tenant key prefix ("kvconf:{t}:").
-- Returns {exists (0/1), rev, epoch, meta, namespaces, schemas, values,
--          trash, history, log} where meta and schemas are flat HGETALLs,
--          values/trash are {ns, flat HGETALL, ...}, history is
--          {ns, {member, ...}, ...} with each namespace's history zset in
--          order (all scores are 0, so they are left out; a member is
--          "<key>|<version, 10 digits>|<record JSON>") and log is
--          {score, event, ...}.
-- Every namespace that ever had a write is in the namespace set, and its
-- history zset holds every version kept of every key, deleted keys too: one
-- ZRANGE per namespace reads the whole history, no SCAN needed.
-- All names carry the tenant's hash tag, so they live in the same slot.

if redis.call('EXISTS', KEYS[3]) == 0 and redis.call('EXISTS', KEYS[1]) == 0 then
  return {0}
end
local base = ARGV[1]
local function flat_zset(key)
  local raw = redis.call('ZRANGE', key, 0, -1, 'WITHSCORES')
  local out = {}
  for i = 1, #raw, 2 do
    out[#out + 1] = tonumber(raw[i + 1])
    out[#out + 1] = raw[i]
  end
  return out
end

local names = redis.call('SMEMBERS', KEYS[4])
local values, trash, history = {}, {}, {}
for _, ns in ipairs(names) do
  for _, pair in ipairs({{values, 'ns:'}, {trash, 'trash:ns:'}, {history, 'hist:'}}) do
    local key = base .. pair[2] .. ns
    local items
    if pair[2] == 'hist:' then
      items = redis.call('ZRANGE', key, 0, -1)
    else
      items = redis.call('HGETALL', key)
    end
    if #items > 0 then
      local out = pair[1]
      out[#out + 1] = ns
      out[#out + 1] = items
    end
  end
end

return {
  1,
  tonumber(redis.call('GET', KEYS[1]) or '0') or 0,
  redis.call('GET', KEYS[2]) or '',
  redis.call('HGETALL', KEYS[3]),
  names,
  redis.call('HGETALL', KEYS[5]),
  values,
  trash,
  history,
  flat_zset(KEYS[6]),
}
