--[[
senderwatch read.lua: read new entries for a consumer of the group, and
in the same atomic step work out how many entries the stream's cap
(events.stream_maxlen) trimmed before the group read them, which
XREADGROUP alone skips without a word.

  redis-cli --eval scripts/read.lua senderwatch:stream , \
      senderwatch-alerters mta1 100

KEYS[1]  the stream (events.stream)
ARGV[1]  the consumer group, ARGV[2] the consumer, ARGV[3] COUNT

Reply: { lost, the reply of XREADGROUP ... STREAMS stream >, lag }
  lost  entries trimmed off the head that the group never read (0 none,
        -1 cannot be known: the group keeps no read counter, say after
        XGROUP SETID, or XINFO is refused)
  lag   entries added that the group had not read before this read, or -1
        when unknown (the alerter subtracts what it got: what is left is
        what a loss of the whole stream would lose)
An error of XREADGROUP (NOGROUP: the stream or group is gone) is the reply.

How: the group's entries-read against the stream's entries-added, and the
last id the group read against the oldest entry left: when the oldest left
is newer, whatever of the stream is no longer there was trimmed unread.  A
group made with "$" on an empty stream has read nothing but shows no
counter until its first read.
]]

if #KEYS ~= 1 or #ARGV ~= 3 then
  return redis.error_reply('ERR read.lua: 1 key (the stream) and group, '
    .. 'consumer, count')
end
local stream, group = KEYS[1], ARGV[1]

local function fields(a)
  local f = {}
  for i = 1, #a, 2 do f[a[i]] = a[i + 1] end
  return f
end
local function after(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  am, as, bm, bs = tonumber(am), tonumber(as), tonumber(bm), tonumber(bs)
  return am > bm or (am == bm and as > bs)
end

local lost, lag = 0, -1
local groups = redis.pcall('XINFO', 'GROUPS', stream)
if groups.err then
  -- No stream: nothing lost here (XREADGROUP below says NOGROUP).
  if not string.find(groups.err, 'no such key', 1, true) then lost = -1 end
else
  for _, g in ipairs(groups) do
    local gf = fields(g)
    if gf['name'] == group then
      local sf = fields(redis.call('XINFO', 'STREAM', stream))
      local first, read = sf['first-entry'], gf['entries-read']
      if not read and gf['last-delivered-id'] == '0-0' then
        read = 0
      end
      if not read then
        lost = -1
      else
        lag = math.max(sf['entries-added'] - read, 0)
        if sf['length'] == 0 or
            (first and after(first[1], gf['last-delivered-id'])) then
          lost = math.max(sf['entries-added'] - read - sf['length'], 0)
          lag = lag - lost
        end
      end
    end
  end
end
local r = redis.pcall('XREADGROUP', 'GROUP', group, ARGV[2], 'COUNT',
  ARGV[3], 'STREAMS', stream, '>')
if type(r) == 'table' and r.err then return r end
return { lost, r, lag }
