-- Failed bearer attempts of one client address, in a fixed window.
-- KEYS[1]: the address's counter. ARGV[1]: "1" to count a failure, "0" to only look.
-- ARGV[2]: the window, in milliseconds (starts at the first failure).
-- Returns {failures in the current window, milliseconds until it ends (-2: no window)}.
local failures
if ARGV[1] == "1" then
    failures = redis.call("INCR", KEYS[1])
    if failures == 1 then
        redis.call("PEXPIRE", KEYS[1], ARGV[2])
    end
else
    failures = tonumber(redis.call("GET", KEYS[1]) or "0")
end
return {failures, redis.call("PTTL", KEYS[1])}
