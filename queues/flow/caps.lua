-- Frequency caps: take one slot per supporter for a blast, fleet-wide and atomically.
--
-- KEYS: one sorted set per supporter and channel; members are blast ids, scores the time
--       (ms, Redis's clock) the blast took its slot.
-- ARGV[1]: the blast id
-- ARGV[2]: the cap: at most this many blasts per window
-- ARGV[3]: the window, in ms
-- ARGV[4]: "1" for a dry run (count, take nothing)
-- Returns the 1-based positions in KEYS of the supporters over the cap.
--
-- The whole page runs as one script, so two blasts expanding at once cannot both take a
-- supporter's last slot. A blast that already holds a slot keeps it: an expansion page
-- retried after a crash is not counted twice.
local blast = ARGV[1]
local limit = tonumber(ARGV[2])
local window_ms = tonumber(ARGV[3])
local dry = ARGV[4] == "1"
local t = redis.call("TIME")
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local capped = {}
for i, key in ipairs(KEYS) do
  redis.call("ZREMRANGEBYSCORE", key, "-inf", now_ms - window_ms)
  if not redis.call("ZSCORE", key, blast) then
    if redis.call("ZCARD", key) >= limit then
      capped[#capped + 1] = i
    elseif not dry then
      redis.call("ZADD", key, now_ms, blast)
      redis.call("PEXPIRE", key, window_ms)
    end
  end
end
return capped
