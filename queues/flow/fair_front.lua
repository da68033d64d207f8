-- A blast new to its lane goes ahead of the blasts already taking turns there (as a fair
-- queue serves a new flow first): its unit moves from the back of the lane to just behind
-- the other new blasts' units, so new blasts keep their order among themselves and each
-- starts within a few turns instead of a whole round of every blast in the lane.
--
-- KEYS[1]  the lane's queue (dramatiq's list of message ids, consumed from the head)
-- KEYS[2]  the lane's last unit moved ahead (a message id)
-- ARGV[1]  the unit's message id (dramatiq's redis_message_id)
-- ARGV[2]  ttl_ms of KEYS[2]
--
-- Returns 1 when moved, 0 when the unit had already left the lane (a worker took it).
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then
  return 0
end
local last = redis.call('GET', KEYS[2])
local placed = 0
if last then
  -- -1: that unit has left the lane; 0: the lane is empty (the LREM emptied it)
  placed = redis.call('LINSERT', KEYS[1], 'AFTER', last, ARGV[1])
end
if placed <= 0 then
  redis.call('LPUSH', KEYS[1], ARGV[1])
end
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
return 1
