-- A unit of a blast left the lane (a worker started it): hand back the blast's next
-- waiting unit, which the caller enqueues at the back of the lane and which takes over
-- the place in the window, or give the place up. See fair_push.lua.
--
-- KEYS[1]  the blast's count of units in the lane
-- KEYS[2]  the blast's waiting units
-- KEYS[3]  the lane's turns
-- KEYS[4]  the lane's blasts with waiting units
-- KEYS[5]  the lane's openings waiting for a thread (see fair_push.lua)
-- ARGV[1]  ttl_ms of the count
-- ARGV[2]  the blast id
--
-- Returns the next payload, or false.
local t = redis.call('TIME')
local now_ms = t[1] * 1000 + math.floor(t[2] / 1000)
redis.call('ZREM', KEYS[5], ARGV[2])  -- a blast's first unit to start is its opening
local queued = tonumber(redis.call('GET', KEYS[1]) or '0')
local nxt = redis.call('LPOP', KEYS[2])
if nxt then
  redis.call('SET', KEYS[1], math.max(queued, 1), 'PX', ARGV[1])
  redis.call('ZADD', KEYS[3], now_ms, ARGV[2])
  if redis.call('LLEN', KEYS[2]) == 0 then
    redis.call('SREM', KEYS[4], ARGV[2])
  end
  return nxt
end
redis.call('SREM', KEYS[4], ARGV[2])
if queued > 1 then
  redis.call('SET', KEYS[1], queued - 1, 'PX', ARGV[1])
  redis.call('ZADD', KEYS[3], now_ms, ARGV[2])
else
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[3], ARGV[2])
end
return false
