--[[
senderwatch count.lua: count one hit of a key in its window, decide, and
announce the first crossing of the limit.  senderwatch-shim loads it with
SCRIPT LOAD and runs it with EVALSHA; it runs by hand too:

  redis-cli --eval scripts/count.lua \
      senderwatch:default:alice@example.org \
      senderwatch:subjects:default:alice@example.org senderwatch:stream , \
      default alice@example.org 20 300000 1 mta1 senderwatch:events "" 10000 count

KEYS[1]  counter      PREFIX:RULE:KEY       integer, PEXPIREd at the first hit
KEYS[2]  subjects     PREFIX:subjects:RULE:KEY  sorted set subject -> count,
                                            same TTL as the counter
KEYS[3]  event stream PREFIX-chosen stream  capped (MAXLEN ~), read by alerters

ARGV[1]  rule name
ARGV[2]  key as the shim escaped it (%XX for bytes outside printable ASCII
         and for % { }), the same text as in KEYS[1]
ARGV[3]  limit: the answer is yes when the count in the window exceeds it
ARGV[4]  window in milliseconds, starting at the key's first hit
ARGV[5]  cost of this hit (1 for a message)
ARGV[6]  reporting host name
ARGV[7]  pub/sub channel for threshold events
ARGV[8]  subject to record, or "" for none
ARGV[9]  approximate maximum length of the event stream
ARGV[10] mode: "count" adds the cost; "peek" only reads

Reply: { over (1 = yes, 0 = no), count, ttl in ms, crossed (1 = this hit
crossed the limit and an event was published) }

The event is published once per crossing whatever the number of shims:
the script is atomic and the count only grows inside a window, so exactly
one hit sees count - cost <= limit < count.
]]

local counter, subjects, stream = KEYS[1], KEYS[2], KEYS[3]
local rule, key = ARGV[1], ARGV[2]
local limit = tonumber(ARGV[3])
local window = tonumber(ARGV[4])
local cost = tonumber(ARGV[5])
local host, channel, subject = ARGV[6], ARGV[7], ARGV[8]
local maxlen, mode = ARGV[9], ARGV[10]

-- Subjects kept per key: enough for a top 10 and then some, yet bounded.
local SUBJECTS_MAX = 100

if mode == 'peek' then
  local n = tonumber(redis.call('GET', counter)) or 0
  local ttl = redis.call('PTTL', counter)
  return { n > limit and 1 or 0, n, ttl, 0 }
end

-- Whatever was in Redis before (a string, a list), the counter must end up
-- an integer with a TTL: a key left without expiry would block for ever.
local n = redis.pcall('INCRBY', counter, cost)
if type(n) == 'table' and n.err then
  redis.call('DEL', counter)
  n = redis.call('INCRBY', counter, cost)
end
redis.call('PEXPIRE', counter, window, 'NX')
local ttl = redis.call('PTTL', counter)

if subject ~= '' then
  if redis.call('TYPE', subjects).ok ~= 'zset' then
    redis.call('DEL', subjects)
  end
  redis.call('ZINCRBY', subjects, 1, subject)
  redis.call('PEXPIRE', subjects, ttl)
  local card = redis.call('ZCARD', subjects)
  if card > SUBJECTS_MAX then
    redis.call('ZREMRANGEBYRANK', subjects, 0, card - SUBJECTS_MAX - 1)
  end
end

local crossed = 0
if n > limit and n - cost <= limit then
  crossed = 1
  local now = redis.call('TIME')
  local t = tonumber(now[1])
  local id = redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*',
    'rule', rule, 'key', key, 'count', n, 'limit', limit,
    'window_ms', window, 'time', t, 'host', host,
    'counter', counter, 'subjects', subjects)
  redis.call('PUBLISH', channel, cjson.encode({
    id = id, rule = rule, key = key, count = n, limit = limit,
    window = window / 1000, time = t, host = host,
  }))
end

return { n > limit and 1 or 0, n, ttl, crossed }
