-- Do other blasts wait for a turn in this lane? A unit asks between pieces of its work and
-- gives its thread up when they do (see fair_push.lua).
--
-- KEYS[1]  the lane's turns (sorted set: blast id -> ms of its last move)
-- ARGV[1]  ttl_ms of a turn: older stamps are counts a lost unit left behind
-- ARGV[2]  the asking blast's id
--
-- Returns how many other blasts have a unit waiting in the lane.
local t = redis.call('TIME')
local now_ms = t[1] * 1000 + math.floor(t[2] / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms - tonumber(ARGV[1]))
local others = redis.call('ZCARD', KEYS[1])
if redis.call('ZSCORE', KEYS[1], ARGV[2]) then
  others = others - 1
end
return others
