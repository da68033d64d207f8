-- Renew or release a leader lease, only if this holder still owns it.
--
-- KEYS[1]  the lease key (its value is the holder's token)
-- ARGV[1]  the holder's token
-- ARGV[2]  new TTL in milliseconds, or 0 to release
-- Returns 1 if the holder owned the lease (renewed or released), 0 if it had lost it.

if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
local ttl_ms = tonumber(ARGV[2])
if ttl_ms > 0 then
  redis.call('PEXPIRE', KEYS[1], ttl_ms)
else
  redis.call('DEL', KEYS[1])
end
return 1
