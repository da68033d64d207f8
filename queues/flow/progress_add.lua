-- One finished batch (or expansion page) of a blast: add its per-state deltas to the blast's
-- live counters and stamp its last progress, in one round trip.
--
-- KEYS[1]  the blast's counters hash (fields "<channel>:<state>")
-- KEYS[2]  the blast's last-progress key (epoch seconds; the sweep's stall detector)
-- ARGV[1]  ttl_s of both keys
-- ARGV[2]  now, epoch seconds
-- ARGV[3..] field, delta, field, delta, ...
--
-- Counters that were never based on the ledger (no "_base" field: the blast started
-- before counters existed, or its keys expired) are left alone rather than started from
-- zero: a partial count would look exact. The next reconcile bases them.
redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[1])
if redis.call('HEXISTS', KEYS[1], '_base') == 0 then
  return 0
end
for i = 3, #ARGV, 2 do
  redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1])
end
redis.call('EXPIRE', KEYS[1], ARGV[1])
return 1
