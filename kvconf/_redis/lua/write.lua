#!lua
-- kvconf write: one change set, all or nothing, one revision.
--
-- KEYS: 1 a namespace hash (the one written, or the first of them), 2 that
--       namespace's history zset.
-- ARGV: 1 tenant key prefix ("kvconf:{t}"), 2 namespace, or "*" for a change
--       set across namespaces, 3 tenant, 4 actor (JSON string), 5 reason
--       (JSON string), 6 now (ISO-8601),
--       7 "<schema generation> <may create 0/1/2> <history bound> <log bound>
--       [request id]" (the id of the API request that made the change, kept
--       in the event; A-Z a-z 0-9 . _ : - only, checked by the client)
--       (schema generation -1: unchecked; may create: 0 no, 1 yes once the
--       client has registered the tenant, which it answers with 'register',
--       2 yes, it is registered); then per key 3 values: key
--       ("namespace/key" when ARGV[2] is "*"), op+expected ("s-1": set, no
--       precondition; "d3": delete if at version 3; "s0": create only;
--       "s-2": only if the key exists, at any version),
--       value JSON.
-- The tenant's rev, epoch, log, meta, namespace-set keys, and the other
-- namespaces' hashes and histories, are named from the prefix: they share the
-- hash tag of KEYS, so they live in the same slot (legal on Cluster; the
-- argument list stays short, which is most of a client's cost per call).
--
-- History: one zset per namespace, all scores 0, members
-- "<key>|<version, 10 digits>|<record JSON>": a key's versions are the
-- lexicographic range ["<key>|", "<key>|\255"] ("|" never occurs in a key).
--
-- Every check runs before the first write: Redis does not roll a script back.
-- Stored records end with their value, see kvconf/_codec.py.

local base = ARGV[1]
local multi = ARGV[2] == '*'
local K = {KEYS[1], base .. ':rev', base .. ':epoch', base .. ':log', base .. ':meta', base .. ':nss'}
local gen_arg, create_arg, keep_arg, log_arg, request_id =
  string.match(ARGV[7], '^(%S+) (%S+) (%S+) (%S+) ?([%w._:%-]*)$')
local n = (#ARGV - 7) / 3

-- Per key: its namespace, namespace hash, history zset and field name.
local nsname, hkey, zkey, field, label = {}, {}, {}, {}, {}
for i = 1, n do
  local arg = ARGV[7 + (i - 1) * 3 + 1]
  label[i] = arg
  if multi then
    local slash = string.find(arg, '/', 1, true)
    nsname[i] = string.sub(arg, 1, slash - 1)
    field[i] = string.sub(arg, slash + 1)
    hkey[i] = base .. ':ns:' .. nsname[i]
    zkey[i] = base .. ':hist:' .. nsname[i]
  else
    nsname[i], field[i], hkey[i], zkey[i] = ARGV[2], arg, K[1], KEYS[2]
  end
end

-- A key of a foreign type must fail the script before its first write. Every
-- key but the log is read first, with pcall, and a WRONGTYPE reply answered
-- with {'wrongtype', key}; the log's ZADD is the script's first write, also
-- with pcall, so a foreign log too fails with nothing written.
local function foreign(reply)
  if type(reply) ~= 'table' or reply.err == nil then return false end
  if string.find(tostring(reply.err), 'WRONGTYPE', 1, true) then return true end
  error(reply)  -- any other error: the script's error, nothing written yet
end

local meta = redis.pcall('HMGET', K[5], 'created_at', 'deleted_at', 'schema_gen')
if foreign(meta) then return {'wrongtype', K[5]} end
local created = 0
if not (meta[1] or meta[2] or meta[3]) and redis.call('EXISTS', K[5]) == 0 then
  if create_arg == '0' then return {'notenant'} end
  -- A new tenant is listed in kvconf:tenants (another slot) by the client
  -- first; "1" asks it to, "2" says it did: no data is ever unlisted.
  if create_arg == '1' then return {'register'} end
  created = 1
elseif meta[2] then
  return {'deleted'}
end
if gen_arg ~= '-1' and (meta[3] or '0') ~= gen_arg then return {'schema', meta[3] or '0'} end
-- The revision must be what INCR takes (canonical, 18 digits at most): the
-- log is written before the INCR, with the revision computed here.
local rev_raw = redis.pcall('GET', K[2])
if foreign(rev_raw) then return {'wrongtype', K[2]} end
if rev_raw and not ((rev_raw == '0' or string.match(rev_raw, '^%-?[1-9]%d*$')) and #rev_raw <= 18) then
  return {'wrongtype', K[2]}
end
local epoch = redis.pcall('GET', K[3])
if foreign(epoch) then return {'wrongtype', K[3]} end

-- Per key: its current and last version, and the checks; per namespace,
-- whether the namespace set lists it already.
local conflicts, missing, olds, lasts, listed = {}, {}, {}, {}, {}
for i = 1, n do
  local b = 7 + (i - 1) * 3
  local op = string.sub(ARGV[b + 2], 1, 1)
  local expected = tonumber(string.sub(ARGV[b + 2], 2))
  local last = 0
  local top = redis.pcall('ZREVRANGEBYLEX', zkey[i], '[' .. field[i] .. '|\255', '[' .. field[i] .. '|',
    'LIMIT', 0, 1)
  if foreign(top) then return {'wrongtype', zkey[i]} end
  if top[1] then last = tonumber(string.match(top[1], '^[^|]*|(%d+)|')) or 0 end
  local cur = 0
  local entry = redis.pcall('HGET', hkey[i], field[i])
  if foreign(entry) then return {'wrongtype', hkey[i]} end
  if entry then
    cur = tonumber(string.match(entry, '^{"version":(%d+),')) or last
    if cur > last then last = cur end
  end
  -- expected: -1 no precondition, -2 the key must exist (reported as -1), else its version
  if (expected >= 0 and expected ~= cur) or (expected == -2 and cur == 0) then
    local shown = expected == -2 and -1 or expected
    conflicts[#conflicts + 1] = '{"key":"' .. label[i] .. '","expected":' .. shown .. ',"actual":' .. cur .. '}'
  end
  if op == 'd' and not entry then missing[#missing + 1] = '"' .. label[i] .. '"' end
  olds[i] = cur
  lasts[i] = last
  if listed[nsname[i]] == nil then
    local member = redis.pcall('SISMEMBER', K[6], nsname[i])
    if foreign(member) then return {'wrongtype', K[6]} end
    listed[nsname[i]] = member == 1
  end
end
if #conflicts > 0 then return {'conflict', '[' .. table.concat(conflicts, ',') .. ']'} end
if #missing > 0 then return {'missing', '[' .. table.concat(missing, ',') .. ']'} end

-- The records and the event, built before the first write.
local rev = (tonumber(rev_raw) or 0) + 1
local new_epoch = not epoch
if new_epoch then
  local t = redis.call('TIME')
  epoch = string.format('%x%06x%x', tonumber(t[1]), tonumber(t[2]), rev)
end
local actor, reason, now = ARGV[4], ARGV[5], ARGV[6]
local stamp = ',"revision":' .. rev .. ',"updated_at":"' .. now .. '","updated_by":' .. actor
local changes, current, history, out = {}, {}, {}, {'ok', rev, epoch, created}
for i = 1, n do
  local b = 7 + (i - 1) * 3
  local op, value = string.sub(ARGV[b + 2], 1, 1), ARGV[b + 3]
  local v = lasts[i] + 1
  local head = '{"version":' .. v .. stamp
  local deleted = 'false'
  if op == 'd' then
    deleted, value = 'true', 'null'
  else
    current[i] = head .. ',"value":' .. value .. '}'
  end
  history[i] = field[i] .. '|' .. string.format('%010d', v) .. '|' .. head .. ',"deleted":' .. deleted
    .. ',"reason":' .. reason .. ',"value":' .. value .. '}'
  local where = ''
  if multi then where = ',"namespace":"' .. nsname[i] .. '"' end
  changes[i] = '{"key":"' .. field[i] .. '"' .. where .. ',"version":' .. v .. ',"old_version":' .. olds[i]
    .. ',"deleted":' .. deleted .. ',"value":' .. value .. '}'
  out[4 + i] = v
end
local traced = ''
if request_id ~= '' then traced = ',"request_id":"' .. request_id .. '"' end
local event = '{"tenant":"' .. ARGV[3] .. '","epoch":"' .. epoch .. '","revision":' .. rev
  .. ',"namespace":"' .. ARGV[2] .. '","actor":' .. actor .. ',"reason":' .. reason .. traced
  .. ',"ts":"' .. now .. '","type":"change","changes":[' .. table.concat(changes, ',') .. ']}'

-- From here on: writes only, the log's first.
if foreign(redis.pcall('ZADD', K[4], rev, event)) then return {'wrongtype', K[4]} end
redis.call('ZREMRANGEBYRANK', K[4], 0, -(tonumber(log_arg) + 1))
redis.call('INCR', K[2])
if new_epoch then redis.call('SET', K[3], epoch) end
if created == 1 then redis.call('HSET', K[5], 'created_at', now) end
local keep = tonumber(keep_arg)
for i = 1, n do
  if not listed[nsname[i]] then
    listed[nsname[i]] = true
    redis.call('SADD', K[6], nsname[i])
  end
  if current[i] then
    redis.call('HSET', hkey[i], field[i], current[i])
  else
    redis.call('HDEL', hkey[i], field[i])
  end
  redis.call('ZADD', zkey[i], 0, history[i])
  local v = lasts[i] + 1
  if v > keep then
    redis.call('ZREMRANGEBYLEX', zkey[i], '[' .. field[i] .. '|',
      '[' .. field[i] .. '|' .. string.format('%010d', v - keep) .. '|\255')
  end
end
redis.call('SPUBLISH', base .. ':changes', event)
return out
