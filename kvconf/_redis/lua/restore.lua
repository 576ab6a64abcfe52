-- kvconf restore: put one tenant's captured state back, all or nothing.
--
-- KEYS: 1 rev, 2 epoch, 3 meta, 4 namespace set, 5 schema hash, 6 log.
-- ARGV: 1 mode ("replace", "merge", "load"), 2 tenant key prefix, 3 tenant,
--       4 fresh epoch, 5 the file's revision, 6 now, 7 actor (JSON), 8 reason
--       (JSON), 9 channel, 10 log bound, 11 the file's epoch;
--       12 the sections as one blob of items (one argument instead of
--       millions keeps the client's encoding cheap), 13 how items are
--       delimited: "z" each ends with a NUL byte, "l" each is "<length>:<bytes>";
--       each section is a count followed by its items:
--       meta (field, value pairs); schemas (pairs); namespace set members;
--       values (ns, n pairs, pairs ...); trash (same); history (ns, n members,
--       members: "<key>|<version, 10 digits>|<record JSON>", all scored 0);
--       log (score/member pairs).
--
-- replace: the tenant becomes the captured one; merge: captured keys are
-- written over the live tenant (a new version where the live key exists and
-- differs), live-only keys stay. Both move the revision past max(live, file),
-- set a fresh epoch and log and publish a "reset" event. load (embedded
-- start-up into an empty server) writes the captured state exactly.
-- replace and load delete the live tenant first: its fixed keys and, per
-- namespace of its namespace set, the values hash, trash hash and history
-- zset (that is all of a tenant's state; no SCAN needed).
-- Every check runs before the first write: Redis does not roll back.

local mode, base = ARGV[1], ARGV[2]
local function parse(blob, sep)
  local out, n, at = {}, 0, 1
  local find, sub = string.find, string.sub
  if sep == 'z' then
    -- items end with a NUL byte (the client checked no item holds one)
    local z = find(blob, '\0', at, true)
    while z do
      n = n + 1
      out[n] = sub(blob, at, z - 1)
      at = z + 1
      z = find(blob, '\0', at, true)
    end
    return out
  end
  local size = #blob
  while at <= size do
    local colon = find(blob, ':', at, true)
    local len = tonumber(sub(blob, at, colon - 1))
    n = n + 1
    out[n] = sub(blob, colon + 1, colon + len)
    at = colon + len + 1
  end
  return out
end
local A = parse(ARGV[12], ARGV[13])
local pos = 1
local function count()
  local n = tonumber(A[pos])
  pos = pos + 1
  return n
end
local CHUNK = 1000
local HCHUNK = 2000

-- parse the sections into index ranges (nothing written yet)
local nmeta = count(); local meta_at = pos; pos = pos + 2 * nmeta
local nschema = count(); local schema_at = pos; pos = pos + 2 * nschema
local nnames = count(); local names_at = pos; pos = pos + nnames
local function sections(width)
  local out = {}
  local n = count()
  for _ = 1, n do
    local name = A[pos]
    local items = tonumber(A[pos + 1])
    out[#out + 1] = {name, pos + 2, items}
    pos = pos + 2 + width * items
  end
  return out
end
local values = sections(2)
local trash = sections(2)
local history = sections(1)
local nlog = count(); local log_at = pos

local live_rev_raw = redis.call('GET', KEYS[1])
local live_rev = tonumber(live_rev_raw or '0')
if live_rev_raw and not live_rev then return {'wrongtype', KEYS[1]} end
local live_gen = tonumber(redis.call('HGET', KEYS[3], 'schema_gen') or '0') or 0
local file_gen = 0
for i = meta_at, meta_at + 2 * nmeta - 1, 2 do
  if A[i] == 'schema_gen' then file_gen = tonumber(A[i + 1]) or 0 end
end

-- HSET key f v f v ... / ZADD key s m s m ...: n pairs from A[at], CHUNK per call
local function put_pairs(command, key, at, n)
  local last = at + 2 * n - 1
  for i = at, last, 2 * CHUNK do
    redis.call(command, key, unpack(A, i, math.min(i + 2 * CHUNK - 1, last)))
  end
end
local function put_hash(key, at, n) put_pairs('HSET', key, at, n) end
local match = string.match
local function put_history(key, at, n)
  -- ZADD 0 member 0 member ...: many members per call, under unpack's limit
  local last = at + n - 1
  for i = at, last, HCHUNK do
    local args, k = {}, 0
    for j = i, math.min(i + HCHUNK - 1, last) do
      args[k + 1] = '0'
      args[k + 2] = A[j]
      k = k + 2
    end
    redis.call('ZADD', key, unpack(args))
  end
end

-- Every key this script will write must be absent or of its kind, checked
-- before the first write. replace and load delete the live tenant's keys
-- first, so those are exempt (a restore may repair them); a namespace that is
-- in the file but not in the live namespace set is not, so its keys are checked.
local doomed, doomed_set = {}, {}
if mode ~= 'merge' then
  doomed = {KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]}
  for _, ns in ipairs(redis.call('SMEMBERS', KEYS[4])) do
    for _, prefix in ipairs({'ns:', 'trash:ns:', 'hist:'}) do
      doomed[#doomed + 1] = base .. prefix .. ns
    end
  end
  for _, k in ipairs(doomed) do doomed_set[k] = true end
end
local targets = {
  {KEYS[2], 'string'}, {KEYS[3], 'hash'}, {KEYS[4], 'set'}, {KEYS[5], 'hash'}, {KEYS[6], 'zset'},
}
for _, h in ipairs(values) do
  targets[#targets + 1] = {base .. 'ns:' .. h[1], 'hash'}
  targets[#targets + 1] = {base .. 'hist:' .. h[1], 'zset'}
end
for _, h in ipairs(trash) do targets[#targets + 1] = {base .. 'trash:ns:' .. h[1], 'hash'} end
for _, h in ipairs(history) do targets[#targets + 1] = {base .. 'hist:' .. h[1], 'zset'} end
for _, target in ipairs(targets) do
  if not doomed_set[target[1]] then
    local t = redis.call('TYPE', target[1]).ok
    if t ~= 'none' and t ~= target[2] then return {'wrongtype', target[1]} end
  end
end

if mode ~= 'merge' then
  for i = 1, #doomed, CHUNK do
    redis.call('DEL', unpack(doomed, i, math.min(i + CHUNK - 1, #doomed)))
  end
end

local rev, epoch = tonumber(ARGV[5]), ARGV[11]
if mode ~= 'load' then
  rev = math.max(live_rev, tonumber(ARGV[5])) + 1
  epoch = ARGV[4]
end
local now, actor, reason = ARGV[6], ARGV[7], ARGV[8]

-- schemas, meta, namespace set
if nschema > 0 then put_hash(KEYS[5], schema_at, nschema) end
if mode == 'merge' then
  if redis.call('EXISTS', KEYS[3]) == 0 then
    for i = meta_at, meta_at + 2 * nmeta - 1, 2 do
      if A[i] == 'created_at' then redis.call('HSET', KEYS[3], 'created_at', A[i + 1]) end
    end
  end
elseif nmeta > 0 then
  put_hash(KEYS[3], meta_at, nmeta)
end
if mode ~= 'load' then
  redis.call('HDEL', KEYS[3], 'deleted_at')
  if redis.call('HEXISTS', KEYS[3], 'created_at') == 0 then
    redis.call('HSET', KEYS[3], 'created_at', now)
  end
  redis.call('HSET', KEYS[3], 'schema_gen', math.max(live_gen, file_gen) + 1)
end
for i = names_at, names_at + nnames - 1, CHUNK do
  redis.call('SADD', KEYS[4], unpack(A, i, math.min(i + CHUNK - 1, names_at + nnames - 1)))
end
for _, h in ipairs(trash) do put_hash(base .. 'trash:ns:' .. h[1], h[2], h[3]) end

local changed = 0
if mode == 'merge' then
  -- the file's history of one key: indexes of its members, built per namespace
  local file_hist, by_ns = {}, {}
  for _, h in ipairs(history) do file_hist[h[1]] = h end
  local function file_versions(ns, key)
    local index = by_ns[ns]
    if not index then
      index = {}
      local h = file_hist[ns]
      if h then
        for j = h[2], h[2] + h[3] - 1 do
          local k = match(A[j], '^([^|]*)|')
          if k then
            local list = index[k]
            if not list then list = {}; index[k] = list end
            list[#list + 1] = j
          end
        end
      end
      by_ns[ns] = index
    end
    return index[key]
  end
  local meta_json = ',"revision":' .. rev .. ',"updated_at":"' .. now .. '","updated_by":' .. actor
  for _, h in ipairs(values) do
    local ns, hk = h[1], base .. 'ns:' .. h[1]
    local zk = base .. 'hist:' .. ns
    redis.call('SADD', KEYS[4], ns)
    for i = h[2], h[2] + 2 * h[3] - 1, 2 do
      local key, entry = A[i], A[i + 1]
      local top = redis.call('ZREVRANGEBYLEX', zk, '[' .. key .. '|\255', '[' .. key .. '|', 'LIMIT', 0, 1)
      if not top[1] then
        redis.call('HSET', hk, key, entry)
        local mine = file_versions(ns, key)
        if mine then
          for j = 1, #mine, HCHUNK do
            local args = {}
            for x = j, math.min(j + HCHUNK - 1, #mine) do
              args[#args + 1] = '0'
              args[#args + 1] = A[mine[x]]
            end
            redis.call('ZADD', zk, unpack(args))
          end
        end
        changed = changed + 1
      else
        local value = string.sub(entry, select(2, string.find(entry, ',"value":', 1, true)) + 1, -2)
        local live = redis.call('HGET', hk, key)
        local live_value = nil
        if live then
          live_value = string.sub(live, select(2, string.find(live, ',"value":', 1, true)) + 1, -2)
        end
        if live_value ~= value then
          local top_v = tonumber(match(top[1], '^[^|]*|(%d+)|')) or 0
          local v = math.max(top_v, tonumber(match(entry, '^{"version":(%d+),')) or 0) + 1
          local head = '{"version":' .. v .. meta_json
          redis.call('HSET', hk, key, head .. ',"value":' .. value .. '}')
          redis.call('ZADD', zk, 0, key .. '|' .. string.format('%010d', v) .. '|' .. head
            .. ',"deleted":false,"reason":' .. reason .. ',"value":' .. value .. '}')
          changed = changed + 1
        end
      end
    end
  end
else
  for _, h in ipairs(values) do put_hash(base .. 'ns:' .. h[1], h[2], h[3]) end
  for _, h in ipairs(history) do put_history(base .. 'hist:' .. h[1], h[2], h[3]) end
  if nlog > 0 then put_pairs('ZADD', KEYS[6], log_at, nlog) end
end

redis.call('SET', KEYS[1], rev)
redis.call('SET', KEYS[2], epoch)
if mode ~= 'load' then
  local event = '{"tenant":"' .. ARGV[3] .. '","epoch":"' .. epoch .. '","revision":' .. rev
    .. ',"namespace":"","actor":' .. actor .. ',"reason":' .. reason
    .. ',"ts":"' .. now .. '","type":"reset","changes":[]}'
  redis.call('ZADD', KEYS[6], rev, event)
  redis.call('ZREMRANGEBYRANK', KEYS[6], 0, -(tonumber(ARGV[10]) + 1))
  redis.call('SPUBLISH', ARGV[9], event)
end
return {'ok', rev, epoch, live_rev, changed}
