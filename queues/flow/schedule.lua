-- Fleet-wide pacing (GCRA): give each send of a batch the earliest time at which it may go
-- without any key exceeding its rate, and advance every key's theoretical arrival time.
--
-- KEYS[1]          the shared key (the Twilio account, or the email rate)
-- KEYS[2]          the shared key's slow-down state (see throttle.lua); may not exist
-- KEYS[3]          the shared key's express schedule; may not exist
-- KEYS[4]          the first per-send key's express schedule; absent without per-send keys
-- KEYS[5..]        per-send keys (a sender number); may repeat; absent when there are none
-- ARGV[1]          interval of the shared key's main schedule, in microseconds
-- ARGV[2]          interval of every per-send key's main schedule, in microseconds
-- ARGV[3]          number of sends n (when KEYS has no per-send keys)
-- ARGV[4]          horizon, in microseconds: do not grant slots later than now + horizon
-- ARGV[5]          cost of each send in units of the shared key (email: recipients per call)
-- ARGV[6]          key TTL in milliseconds
-- ARGV[7]          recovery of the slow-down factor, per second (e.g. 0.1: +10 % a second)
-- ARGV[8]          interval of the shared key's express schedule, in microseconds; 0: none
-- ARGV[9]          the same for every per-send key
-- ARGV[10]         1: the first send takes its slot on the express schedules when that is
--                  earlier (a new blast's first text). A key's two schedules are paced
--                  apart and their rates add up to its own: messaging/sending/pacing.py
-- Returns {now_us, booked_until_us, slot_us_1, slot_us_2, ...}: the shared key's theoretical
-- arrival time after this call (how far ahead its schedule is booked), then as many slots as
-- were granted, in order.
-- Times come from Redis TIME, so every worker in the fleet paces against one clock.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local shared_interval = tonumber(ARGV[1])
local each_interval = tonumber(ARGV[2])
local n = tonumber(ARGV[3])
local horizon = now + tonumber(ARGV[4])
local cost = tonumber(ARGV[5])
local ttl_ms = tonumber(ARGV[6])
local recover_per_s = tonumber(ARGV[7])
local express_interval = tonumber(ARGV[8])
local each_express_interval = tonumber(ARGV[9])
local express = tonumber(ARGV[10]) == 1 and express_interval > 0

-- A provider's 429 lowered this key's rate by a factor that recovers linearly with time.
local slow = redis.call('HMGET', KEYS[2], 'factor', 'since')
if slow[1] then
  local factor = tonumber(slow[1]) + (now - tonumber(slow[2])) / 1000000 * recover_per_s
  if factor < 1 then
    shared_interval = shared_interval / factor
    express_interval = express_interval / factor
  end
end

local function tat_of(key)
  local tat = tonumber(redis.call('GET', key) or '0')
  if tat < now then tat = now end
  return tat
end

local per_send = #KEYS > 3
if per_send then n = #KEYS - 4 end
local express_tat = nil
local each_express_tat = nil
if express then
  express_tat = tat_of(KEYS[3])
  if per_send and each_express_interval > 0 then each_express_tat = tat_of(KEYS[4]) end
end

local shared_tat = tat_of(KEYS[1])
local tats = {}
-- Numbers, not strings: Redis turns Lua numbers into integer replies (exact below 2^53).
local result = {now, 0}

for i = 1, n do
  local own = now
  local key = nil
  if per_send then
    key = KEYS[i + 4]
    own = tats[key] or tat_of(key)
  end
  local slot = math.max(shared_tat, own)
  -- The express slot: both express schedules, or the per-send key's main one if it has none.
  local fast = false
  if express and i == 1 then
    local fast_slot = math.max(express_tat, each_express_tat or own)
    if fast_slot < slot then slot, fast = fast_slot, true end
  end
  if slot > horizon then break end
  if fast then
    redis.call('SET', KEYS[3], string.format('%.0f', slot + express_interval * cost), 'PX', ttl_ms)
  else
    shared_tat = slot + shared_interval * cost
  end
  if fast and each_express_tat then
    redis.call('SET', KEYS[4], string.format('%.0f', slot + each_express_interval), 'PX', ttl_ms)
  elseif per_send then
    tats[key] = slot + each_interval
  end
  result[#result + 1] = slot
end

redis.call('SET', KEYS[1], string.format('%.0f', shared_tat), 'PX', ttl_ms)
result[2] = shared_tat
for key, tat in pairs(tats) do
  redis.call('SET', key, string.format('%.0f', tat), 'PX', ttl_ms)
end
return result
