-- A sender gives up ledger rows (their outcome is written, or the batch ended without one).
--
-- KEYS[1]  this process's set of held rows ("<channel>|<supporter id>|<blast id>")
-- ARGV     three arguments per blast and channel: "<channel>|", "|<blast id>" and the
--          supporter ids comma-separated (see inflight_beat.lua)
local chunk = {}
for i = 1, #ARGV, 3 do
  local prefix, suffix = ARGV[i], ARGV[i + 1]
  for id in string.gmatch(ARGV[i + 2], '[^,]+') do
    chunk[#chunk + 1] = prefix .. id .. suffix
    if #chunk == 1000 then
      redis.call('SREM', KEYS[1], unpack(chunk))
      chunk = {}
    end
  end
end
if #chunk > 0 then
  redis.call('SREM', KEYS[1], unpack(chunk))
end
return 0
