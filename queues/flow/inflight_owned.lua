-- Which ledger rows live sender processes hold; forgets processes whose beat stopped.
--
-- KEYS[1]  the fleet's registry hash: process id -> last beat, ms on Redis's clock
-- ARGV[1]  key prefix of the processes' sets (the process id follows it)
-- ARGV[2]  alive_ms: a process whose last beat is older than this is dead
--
-- Returns {since_ms, row, row, ...}: since_ms is how long the registry has existed (0 when
-- it does not), so the caller can tell "nobody holds it" from "nobody has told us yet".
-- Set keys are derived from the registry (one Redis, not a cluster: the fleet's other
-- scripts make the same assumption).
local t = redis.call('TIME')
local now_ms = t[1] * 1000 + math.floor(t[2] / 1000)
local out = {0}
local registry = redis.call('HGETALL', KEYS[1])
for i = 1, #registry, 2 do
  local proc, beat = registry[i], tonumber(registry[i + 1])
  local set = ARGV[1] .. proc
  if proc == '_since' then
    out[1] = now_ms - beat
  elseif now_ms - beat <= tonumber(ARGV[2]) then
    for _, row in ipairs(redis.call('SMEMBERS', set)) do
      out[#out + 1] = row
    end
  else
    redis.call('HDEL', KEYS[1], proc)
    redis.call('DEL', set)
  end
end
return out
