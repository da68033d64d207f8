-- Replace a blast's live counters with the ledger's counts (the reconcile), atomically, so
-- a reader never sees a half-written hash.
--
-- KEYS[1]  the blast's counters hash
-- ARGV[1]  ttl_s
-- ARGV[2..] field, count, field, count, ...
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], '_base', '1')
for i = 2, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
end
redis.call('EXPIRE', KEYS[1], ARGV[1])
return 1
