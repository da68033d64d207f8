-- Keeps a lane's waiting units flowing when the unit that held a blast's place can no
-- longer start it: a worker killed with the unit prefetched (the broker gives it back only
-- after a minute or more), or a unit lost between fair_push.lua and the broker. Such a
-- blast's place count lapses (its TTL, refreshed whenever a unit of it starts); this round
-- then lets its oldest waiting unit in. Run by every unit that starts and by the scheduler.
--
-- KEYS[1]  the lane's blasts with waiting units (set)
-- ARGV[1]  the lane's key prefix: a blast's keys are <prefix>:<blast>:queued|waiting
-- ARGV[2]  ttl_ms of a place count
--
-- The keys of each blast are derived here from ARGV[1] (one Redis, not a cluster: the
-- whole fleet shares one, as the dramatiq broker's own scripts assume).
-- Returns the payloads to enqueue on the lane now.
local out = {}
for _, blast in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local count = ARGV[1] .. ':' .. blast .. ':queued'
  local waiting = ARGV[1] .. ':' .. blast .. ':waiting'
  if redis.call('EXISTS', count) == 0 then
    local nxt = redis.call('LPOP', waiting)
    if nxt then
      redis.call('SET', count, 1, 'PX', ARGV[2])
      table.insert(out, nxt)
    end
  end
  if redis.call('LLEN', waiting) == 0 then
    redis.call('SREM', KEYS[1], blast)
  end
end
return out
