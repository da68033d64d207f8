-- Fair share within a lane (issue #21): a blast keeps at most `window` units of work in
-- its lane's FIFO queue; the rest waits in the blast's own list here. A unit that starts
-- lets the blast's next one join the back of the lane (fair_next.lua), so same-priority
-- blasts take turns instead of going out one after another. The lane's `turns` set holds
-- the blasts with a unit in the lane, stamped when last moved (fair_others.lua reads it).
--
-- KEYS[1]  the blast's count of units in the lane (string integer)
-- KEYS[2]  the blast's waiting units (list of payloads, oldest first)
-- KEYS[3]  the lane's turns (sorted set: blast id -> ms of its last move)
-- KEYS[4]  the lane's blasts with waiting units (set; fair_pump.lua's round)
-- ARGV[1]  window: units a blast may have in the lane at once
-- ARGV[2]  the new unit's payload
-- ARGV[3]  ttl_ms of the count and of a turn: a count left behind by a lost unit (a crash
--          between this script and the broker's enqueue, a Redis that lost the lane)
--          lapses, and the blast's waiting units flow again
-- ARGV[4]  ttl_ms of the waiting list
-- ARGV[5]  the blast id
-- ARGV[6]  ttl_ms of the blast's mark in the lane (KEYS[5])
-- KEYS[5]  the blast's mark: set while it pushed units here in the last ARGV[6] ms
-- KEYS[6]  the lane's openings waiting for a thread (sorted set: blast id -> ms pushed;
--          fair_next.lua removes a blast when its unit starts, fair_openings.lua counts)
--
-- Returns {payload, new}: the payload to enqueue on the lane now (the oldest waiting one,
-- if any, so a blast's units keep their order) or false, when the new unit waits here; and
-- 1 when the blast is new to the lane (no push in the last ARGV[6] ms: fair_front.lua).
local fresh = redis.call('SET', KEYS[5], '1', 'PX', ARGV[6], 'NX') and 1 or 0
if fresh == 0 then
  redis.call('PEXPIRE', KEYS[5], ARGV[6])
end
local t = redis.call('TIME')
local now_ms = t[1] * 1000 + math.floor(t[2] / 1000)
redis.call('ZADD', KEYS[3], now_ms, ARGV[5])
redis.call('PEXPIRE', KEYS[3], ARGV[4])
if fresh == 1 then
  redis.call('ZADD', KEYS[6], now_ms, ARGV[5])
  redis.call('PEXPIRE', KEYS[6], ARGV[3])
end
local queued = tonumber(redis.call('GET', KEYS[1]) or '0')
if queued >= tonumber(ARGV[1]) then
  redis.call('RPUSH', KEYS[2], ARGV[2])
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
  redis.call('SADD', KEYS[4], ARGV[5])
  redis.call('PEXPIRE', KEYS[4], ARGV[4])
  return {false, fresh}
end
redis.call('SET', KEYS[1], queued + 1, 'PX', ARGV[3])
if redis.call('LLEN', KEYS[2]) == 0 then
  return {ARGV[2], fresh}
end
redis.call('RPUSH', KEYS[2], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
redis.call('SADD', KEYS[4], ARGV[5])
redis.call('PEXPIRE', KEYS[4], ARGV[4])
return {redis.call('LPOP', KEYS[2]), fresh}
