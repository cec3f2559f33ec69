--[[
senderwatch lease.lua: take or renew the lease on a consumer name, so that
one process at a time reads as that consumer (two would share its pending
list, and each could mail what the other is sending).

  redis-cli --eval scripts/lease.lua senderwatch:alerter:mta1 , \
      "mta1 4242" 3000 ""

KEYS[1]  PREFIX:alerter:CONSUMER
ARGV[1]  us: "HOST PID"
ARGV[2]  the lease's lifetime in ms (renewed well before it lapses)
ARGV[3]  a holder we may replace (our own host's dead process), or ""

Reply: "" once the lease is ours for ARGV[2] ms, else the holder's value.
]]

if #KEYS ~= 1 or #ARGV ~= 3 then
  return redis.error_reply('ERR lease.lua: 1 key and us, ttl_ms, stale')
end
local v = redis.call('GET', KEYS[1])
if v and v ~= ARGV[1] and v ~= ARGV[3] then return v end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return ''
