"""The Lua scripts the recorders run on the Redis server.

Each script runs atomically, so a check followed by writes inside one script cannot interleave
with another client's writes. Write scripts check everything first and write only when nothing
conflicts, because Redis does not roll back a script that fails half way: no command after the
checks can fail on data we own.

The ``#!lua`` shebang (Redis 7.0+) makes the server refuse a write script up front when it is
out of memory, instead of failing between two writes. Read scripts declare ``no-writes``.
"""

from __future__ import annotations

from typing import Final

# Conflict codes returned as ``{code, detail}`` by the write scripts.
CONFLICT_VERSION_TAKEN: Final = 1
CONFLICT_VERSION_REPEATED: Final = 2
CONFLICT_TRACKING: Final = 3
# Not a conflict: the counter disagrees with the log, so no id can be given safely.
COUNTER_BEHIND_LOG: Final = 4

INSERT_AGGREGATE_EVENTS: Final = """#!lua
-- KEYS[1..m]: one sorted set per aggregate, score = version, member = packed event.
-- ARGV: per event, the index of its key in KEYS, its version and its packed member.
-- Returns 0, or {conflict code, index of the offending event}.
local seen = {}
local n = #ARGV / 3
for i = 1, n do
  local k, v = ARGV[3 * i - 2], ARGV[3 * i - 1]
  local mark = k .. ':' .. v
  if seen[mark] then return {2, i} end
  seen[mark] = true
  if redis.call('ZCOUNT', KEYS[tonumber(k)], v, v) > 0 then return {1, i} end
end
for i = 1, n do
  redis.call('ZADD', KEYS[tonumber(ARGV[3 * i - 2])], ARGV[3 * i - 1], ARGV[3 * i])
end
return 0
"""

INSERT_NOTIFIED_EVENTS: Final = """#!lua
-- KEYS[1]: counter of the last notification id.
-- KEYS[2]: the log, a stream whose entry ids are '<notification id>-0'.
-- KEYS[3..2+m]: one sorted set per aggregate, score = version, member = notification id.
-- KEYS[3+m]: the tracking hash, only when a tracking record comes with the events.
-- ARGV[1] = m, ARGV[2] = n (events), ARGV[3..2+m] = originator id of each aggregate key,
-- then per event: key index (1..m), version, topic, state;
-- then, with tracking: application name, notification id.
-- Returns the first notification id given (0 when n = 0), or {conflict code, detail}.
local m, n = tonumber(ARGV[1]), tonumber(ARGV[2])
local base = 2 + m
local seen = {}
for i = 1, n do
  local at = base + 4 * (i - 1)
  local k, v = ARGV[at + 1], ARGV[at + 2]
  local mark = k .. ':' .. v
  if seen[mark] then return {2, i} end
  seen[mark] = true
  if redis.call('ZCOUNT', KEYS[2 + tonumber(k)], v, v) > 0 then return {1, i} end
end
local tracking_at = base + 4 * n
local application = ARGV[tracking_at + 1]
if application then
  local current = redis.call('HGET', KEYS[3 + m], application)
  if current and tonumber(current) >= tonumber(ARGV[tracking_at + 2]) then
    return {3, current}
  end
end
local first = 0
if n > 0 then
  -- The log is the truth and the counter a shortcut to its end. Should the counter have
  -- been lost (an evicting maxmemory-policy), XADD would fail after other writes: refuse.
  local counter = tonumber(redis.call('GET', KEYS[1]) or '0')
  local tail = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)[1]
  if tail and tonumber(string.match(tail[1], '^%d+')) ~= counter then
    return {4, counter}
  end
  first = redis.call('INCRBY', KEYS[1], n) - n + 1
  for i = 1, n do
    local at = base + 4 * (i - 1)
    local k = tonumber(ARGV[at + 1])
    local nid = string.format('%d', first + i - 1)
    redis.call('ZADD', KEYS[2 + k], ARGV[at + 2], nid)
    redis.call('XADD', KEYS[2], nid .. '-0',
      'i', ARGV[2 + k], 'v', ARGV[at + 2], 't', ARGV[at + 3], 's', ARGV[at + 4])
  end
end
if application then
  redis.call('HSET', KEYS[3 + m], application, ARGV[tracking_at + 2])
end
return first
"""

INSERT_TRACKING: Final = """#!lua
-- KEYS[1]: the tracking hash, application name -> last processed notification id.
-- ARGV[1]: application name, ARGV[2]: notification id.
-- Returns 0, or {conflict code, current notification id}.
local current = redis.call('HGET', KEYS[1], ARGV[1])
if current and tonumber(current) >= tonumber(ARGV[2]) then return {3, current} end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 0
"""

SELECT_NOTIFIED_EVENTS: Final = """#!lua flags=no-writes
-- KEYS[1]: the aggregate's sorted set (version -> notification id); KEYS[2]: the log.
-- ARGV: min, max (ZRANGE BYSCORE bounds, swapped when descending), 'desc' or 'asc', limit.
-- Returns a flat array: version, topic, state for each event, in the order asked.
local ids
if ARGV[3] == 'desc' then
  ids = redis.call('ZRANGE', KEYS[1], ARGV[1], ARGV[2], 'BYSCORE', 'REV', 'LIMIT', 0, ARGV[4])
else
  ids = redis.call('ZRANGE', KEYS[1], ARGV[1], ARGV[2], 'BYSCORE', 'LIMIT', 0, ARGV[4])
end
local out = {}
for i = 1, #ids do
  local entry = redis.call('XRANGE', KEYS[2], ids[i] .. '-0', ids[i] .. '-0')[1]
  local fields = entry[2]
  out[#out + 1] = fields[4]
  out[#out + 1] = fields[6]
  out[#out + 1] = fields[8]
end
return out
"""

SCAN_NOTIFICATIONS: Final = """#!lua flags=no-writes
-- KEYS[1]: the log. ARGV: first id (inclusive), last id (inclusive, or '+'), limit,
-- budget (most entries to look at in this call), then the topics wanted.
-- Returns {id of the last entry looked at or '', 1 when the log was exhausted else 0,
--          matching entries as XRANGE returns them}.
local wanted = {}
for i = 5, #ARGV do wanted[ARGV[i]] = true end
local limit, budget = tonumber(ARGV[3]), tonumber(ARGV[4])
local out, last, looked, cursor = {}, '', 0, ARGV[1]
while looked < budget do
  local count = math.min(256, budget - looked)
  local batch = redis.call('XRANGE', KEYS[1], cursor, ARGV[2], 'COUNT', count)
  for i = 1, #batch do
    local entry = batch[i]
    looked = looked + 1
    last = entry[1]
    if wanted[entry[2][6]] then
      out[#out + 1] = entry
      if #out >= limit then return {last, 0, out} end
    end
  end
  if #batch < count then return {last, 1, out} end
  cursor = '(' .. last
end
return {last, 0, out}
"""
