-- Does a blast's opening (its first unit in the lane) wait for a thread? Threads waiting
-- for room on the rate's schedule give theirs up then (messaging/sending/room.py).
--
-- KEYS[1]  the lane's openings (sorted set: blast id -> ms pushed; see fair_push.lua)
-- ARGV[1]  ttl_ms: an opening older than this was lost (its unit never started) and lapses
--
-- Returns how many openings wait.
local t = redis.call('TIME')
local now_ms = t[1] * 1000 + math.floor(t[2] / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms - tonumber(ARGV[1]))
return redis.call('ZCARD', KEYS[1])
