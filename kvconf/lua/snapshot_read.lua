-- kvconf snapshot_read: everything of one tenant, captured at one revision.
--
-- KEYS: 1 rev, 2 epoch, 3 meta, 4 namespace set, 5 schema hash, 6 log.
-- ARGV: 1 tenant key prefix ("kvconf:{t}:"), 2 discover history keys named in
--       log events after this revision, 3 known history suffixes ("ns:key"),
--       newline-separated.
-- Returns {exists (0/1), rev, epoch, meta, namespaces, schemas, values,
--          trash, history, log} where meta and schemas are flat HGETALLs,
--          values/trash are {ns, flat HGETALL, ...}, history is
--          {"ns:key", {record, ...} oldest first, ...} (a record starts with its
--          version, the score: leaving scores out halves the cost) and log is
--          {score, event, ...}.
-- History keys are found from ARGV (a SCAN done before reading KEYS[1] and
-- ARGV[2]), from every current and soft-deleted field, and from log events
-- after ARGV[2]: together they cover every key that exists now.
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

local seen, hist_names = {}, {}
local function want(suffix)
  if not seen[suffix] then
    seen[suffix] = true
    hist_names[#hist_names + 1] = suffix
  end
end
for suffix in string.gmatch(ARGV[3] or '', '[^\n]+') do want(suffix) end

local names = redis.call('SMEMBERS', KEYS[4])
local values, trash = {}, {}
for _, ns in ipairs(names) do
  for _, pair in ipairs({{values, 'ns:'}, {trash, 'trash:ns:'}}) do
    local fields = redis.call('HGETALL', base .. pair[2] .. ns)
    if #fields > 0 then
      local out = pair[1]
      out[#out + 1] = ns
      out[#out + 1] = fields
      for i = 1, #fields, 2 do want(ns .. ':' .. fields[i]) end
    end
  end
end

local after = tonumber(ARGV[2]) or 0
local recent = redis.call('ZRANGEBYSCORE', KEYS[6], '(' .. after, '+inf')
for _, event in ipairs(recent) do
  local ns = string.match(event, '"namespace":"([^"]*)"')
  if ns == '*' then  -- a change set across namespaces: each change names its own
    for key, kns in string.gmatch(event, '{"key":"([^"]+)","namespace":"([^"]+)","version":') do
      want(kns .. ':' .. key)
    end
  elseif ns and ns ~= '' then
    for key in string.gmatch(event, '{"key":"([^"]+)","version":') do want(ns .. ':' .. key) end
  end
end

local history = {}
for _, suffix in ipairs(hist_names) do
  local members = redis.call('ZRANGE', base .. 'hist:' .. suffix, 0, -1)
  if #members > 0 then
    history[#history + 1] = suffix
    history[#history + 1] = members
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
