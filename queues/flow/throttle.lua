-- A provider answered 429 for this key: multiply its rate by ARGV[1] (e.g. 0.7), at most
-- once per ARGV[3] microseconds (a burst of 429s is one signal, not many), never below
-- ARGV[2] of the configured rate. The factor recovers by itself (see schedule.lua).
--
-- KEYS[1]  the slow-down state: a hash {factor, since}
-- ARGV[1]  multiplicative decrease      ARGV[2]  floor
-- ARGV[3]  cool-down, microseconds      ARGV[4]  recovery per second
-- ARGV[5]  TTL of the state, milliseconds
-- Returns the new factor, in thousandths.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local decrease, floor = tonumber(ARGV[1]), tonumber(ARGV[2])
local cooldown, recover_per_s = tonumber(ARGV[3]), tonumber(ARGV[4])

local factor, since = 1.0, 0
local slow = redis.call('HMGET', KEYS[1], 'factor', 'since')
if slow[1] then
  since = tonumber(slow[2])
  factor = math.min(1.0, tonumber(slow[1]) + (now - since) / 1000000 * recover_per_s)
  if now - since < cooldown then return math.floor(factor * 1000) end
end
factor = math.max(floor, factor * decrease)
redis.call('HSET', KEYS[1], 'factor', tostring(factor), 'since', string.format('%.0f', now))
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[5]))
return math.floor(factor * 1000)
