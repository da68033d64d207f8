-- A unit of work went on a lane: leave a token that wakes one idle consumer of it.
-- KEYS[1] the lane's wake list; ARGV[1] tokens kept at most; ARGV[2] the list's ttl_ms.
-- Tokens only shorten an idle consumer's wait (it also wakes on its timeout), so a capped
-- list and a TTL are enough: a stale token costs one empty fetch.
redis.call("LPUSH", KEYS[1], "1")
redis.call("LTRIM", KEYS[1], 0, tonumber(ARGV[1]) - 1)
redis.call("PEXPIRE", KEYS[1], ARGV[2])
return 1
