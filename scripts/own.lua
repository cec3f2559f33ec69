--[[
senderwatch own.lua: for each stream entry an alerter holds, say whether
it is still this consumer's, and if so reset its idle time, in one atomic
step.  A plain XCLAIM would steal an entry back from an alerter that
rightly took it over while we were cut off from Redis, and both would mail
it.  senderwatch-alerter runs it before each mail and every claim_idle / 3.

  redis-cli --eval scripts/own.lua senderwatch:stream , \
      senderwatch-alerters mta1 1795462219077-0 1795462219078-0

KEYS[1]  the stream (events.stream)
ARGV[1]  the consumer group (events.group)
ARGV[2]  this alerter's consumer name (alerts.consumer)
ARGV[3..] entry ids

Reply: one integer per id: 1 ours (its idle time is now 0), 0 another
consumer's or acknowledged already, 2 unknown to Redis (the stream, the
group or the entry is gone: the data was lost, so the alerter mails what it
holds anyway).  Any other error of Redis is raised, not taken for a loss.
]]

if #KEYS ~= 1 or #ARGV < 2 then
  return redis.error_reply('ERR own.lua: 1 key (the stream) and '
    .. 'group, consumer, ids...')
end
local stream, group, me = KEYS[1], ARGV[1], ARGV[2]

local function gone(e)
  return string.sub(e.err, 1, 7) == 'NOGROUP' or
    string.sub(e.err, 1, 9) == 'WRONGTYPE'
end

local out = {}
for i = 3, #ARGV do
  local id = ARGV[i]
  local p = redis.pcall('XPENDING', stream, group, id, id, 1)
  if p.err then
    if not gone(p) then error(p) end
    out[#out + 1] = 2
  elseif #p == 0 then
    if #redis.call('XRANGE', stream, id, id) == 0 then
      out[#out + 1] = 2
    else
      out[#out + 1] = 0
    end
  elseif p[1][2] == me then
    redis.call('XCLAIM', stream, group, me, 0, id, 'JUSTID')
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
return out
