-- A sender process says it is alive and which ledger rows it holds (claimed, outcome not
-- yet written), in one round trip. Also how it takes new rows (hold): the same call.
--
-- KEYS[1]  the fleet's registry hash: process id -> last beat, ms on Redis's clock
-- KEYS[2]  this process's set of held rows ("<channel>|<supporter id>|<blast id>")
-- ARGV[1]  this process's id
-- ARGV[2]  ttl_ms of the set (it outlives a dead process only until the sweep drops it)
-- ARGV[3..] rows to add, three arguments per blast and channel: "<channel>|", "|<blast id>"
--           and the supporter ids comma-separated (a beat re-adds every row the process
--           holds, so a Redis that lost its data knows them again within one beat)
local t = redis.call('TIME')
local now_ms = t[1] * 1000 + math.floor(t[2] / 1000)
redis.call('HSET', KEYS[1], ARGV[1], now_ms)
-- When this registry began: a sweep must not judge senders silent before they could beat
-- (a Redis that restarted empty knows nobody until every live sender has beaten again).
redis.call('HSETNX', KEYS[1], '_since', now_ms)
-- In chunks: unpack() of a whole beat (every held row) could pass Lua's stack limit.
local chunk = {}
for i = 3, #ARGV, 3 do
  local prefix, suffix = ARGV[i], ARGV[i + 1]
  for id in string.gmatch(ARGV[i + 2], '[^,]+') do
    chunk[#chunk + 1] = prefix .. id .. suffix
    if #chunk == 1000 then
      redis.call('SADD', KEYS[2], unpack(chunk))
      chunk = {}
    end
  end
end
if #chunk > 0 then
  redis.call('SADD', KEYS[2], unpack(chunk))
end
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return now_ms
