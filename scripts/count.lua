--[[
senderwatch count.lua: check and count one request of a key against every
limit of a rule, decide, and record each limit's first crossing.
senderwatch-shim loads it with SCRIPT LOAD and runs it with EVALSHA; it runs
by hand too (one limit of 20 per 5 minutes, fixed window):

  redis-cli --eval scripts/count.lua \
      senderwatch:subjects:default:alice@example.org senderwatch:stream \
      senderwatch:override:default:alice@example.org \
      senderwatch:default:alice@example.org \
      senderwatch:crossed:default:alice@example.org , \
      default alice@example.org 1 mta1 senderwatch:events "" 10000 \
      count fixed 0 1 1 senderwatch-alerters 20 300000 20

KEYS[1]  subjects   PREFIX:subjects:RULE:KEY   zset subject -> count, with the
                                               first limit's TTL
KEYS[2]  stream     events.stream              capped record of threshold
                                               events, read by the alerters
KEYS[3]  override   PREFIX:override:RULE:KEY   optional runtime override set
                                               by an admin: "allow", "block"
                                               or "xF" (multiply limits by F)
KEYS[2+2i]  state   PREFIX:RULE[.WIN]:KEY      limit i's state: fixed: an
                                               integer count; sliding: a hash
                                               {i bucket, c count, p previous};
                                               gcra: 1, expiring at the
                                               theoretical arrival time.
                                               Always with a TTL.
KEYS[3+2i]  crossed PREFIX:crossed:RULE[.WIN]:KEY  set while limit i is over:
                                               one event per crossing
  (i = 1 .. n, n from 1 to 8: 3 + 2n keys)

ARGV[1]  rule name          ARGV[2]  key as escaped in the key names
ARGV[3]  cost: plain digits, 0 to COST_MAX (with mode=peek, 0 asks
         whether the key is over already)
ARGV[4]  reporting host
ARGV[5]  events channel     ARGV[6]  subject to record, or ""
ARGV[7]  stream MAXLEN ~    ARGV[8]  mode: "count", or "peek" (read only)
ARGV[9]  algorithm: fixed | sliding | gcra
ARGV[10] shadow: 1 counts and announces but the answer is always no
ARGV[11] count_denied: 1 adds the cost even when the answer is yes
ARGV[12] factor from the config's per-key override (1 = none)
ARGV[13] the alerters' consumer group (made with the stream, see announce)
ARGV[14+3(i-1) ..] limit i: limit, window in ms, burst (gcra; else ignored)
  (13 + 3n arguments)

Reply: { answer (1 yes, 0 no), count, ttl_ms (-1: not looked up),
crossed (1 if this request recorded an event), limit number that decided
(1-based, 0 none), over (1 if a limit is exceeded, even in shadow mode),
override (0 none, 1 allow, 2 block, 3 factor) }, or an error: a wrong
number of keys or arguments, a bad cost, or an error of Redis itself.  A
full Redis's OOM comes at the first write and leaves every key as it was;
an error after it (a stream key of another type) leaves the counts as
they were counted, records no crossing, and sets no marker.

Exactly once: a limit's crossing is recorded only by the request that
creates its "crossed" marker (SET NX), and the script is atomic, so any
number of shims record one event per crossing.  The stream entry's fields
are common/keyspace.h's keyspace_fields[], in that order.
]]

local FIXED_ARGS = 13
local COST_MAX = 1000000	-- common/keyspace.h: KEYSPACE_COST_MAX, and so
				-- at most 6 digits or '1000000' below
local SUBJECTS_MAX = 100	-- subjects kept per key: a top 10 and then some

-- n is whole only when #KEYS matches it, so one comparison checks both.
local n = (#ARGV - FIXED_ARGS) / 3
if #KEYS ~= 3 + 2 * n or n < 1 or n > 8 then
  return redis.error_reply(string.format('ERR count.lua: got %d keys and '
    .. '%d arguments; a rule of n limits (1 to 8) takes 3 + 2n keys and '
    .. '%d + 3n arguments', #KEYS, #ARGV, FIXED_ARGS))
end

-- Every EVALSHA runs this whole file, so what the common case (a fixed
-- window counting every attempt) does not need is defined after it has
-- returned: each closure and table made here costs Redis CPU per decision.

local cost_arg, subject, mode, algorithm = ARGV[3], ARGV[6], ARGV[8], ARGV[9]
local shadow = ARGV[10] == '1'
local count_denied = ARGV[11] == '1'
local factor = tonumber(ARGV[12])

-- INCRBY is given ARGV[3] as written: turning a Lua number back into a
-- string (sprintf "%.14g") cost more per window than the INCRBY itself.
-- So the cost must be plain digits INCRBY accepts.
if not (cost_arg == '0' or ((#cost_arg < 7 or cost_arg == '1000000') and
    string.match(cost_arg, '^[1-9]%d*$'))) then
  return redis.error_reply('ERR cost must be a whole number from 0 to '
    .. COST_MAX)
end
local cost = tonumber(cost_arg)

-- Errors.  Only a value of the wrong type, or a string INCRBY refuses, is
-- corrupt: left by another tool or an algorithm change, it is replaced
-- rather than allowed to fail every request and keep the key without a
-- TTL.  Every other error (OOM on a full Redis, READONLY, BUSY...) is
-- raised as it is: the script stops, nothing is replaced, and the shim
-- answers its fail policy and says why.  A full Redis must never look like
-- an empty one.
local function corrupt(e, incr)
  return string.sub(e.err, 1, 9) == 'WRONGTYPE' or (incr and
    (string.find(e.err, 'not an integer', 1, true) or
     string.find(e.err, 'overflow', 1, true)))
end

-- The one reply: see the contract above.
local function reply(over, count, ttl, crossed, decided, override)
  return { (over and not shadow) and 1 or 0, count, ttl or -1,
    crossed > 0 and 1 or 0, decided, over and 1 or 0, override }
end

-- Runtime override, set with scripts/override.lua or plain redis-cli.  A
-- key of another type there is not an override.
local override = 0
local ov = redis.pcall('GET', KEYS[3])
if type(ov) == 'table' then
  if not corrupt(ov) then error(ov) end
elseif ov == 'allow' then
  return reply(false, 0, -1, 0, 0, 1)
elseif ov == 'block' then
  return reply(true, 0, -1, 0, 0, 2)
elseif ov and string.sub(ov, 1, 1) == 'x' and tonumber(string.sub(ov, 2)) then
  factor = tonumber(string.sub(ov, 2))
  override = 3
end

-- Limit i's limit, with an override's factor applied.
local function limit_of(i)
  local l = tonumber(ARGV[FIXED_ARGS + 3 * i - 2])
  if factor ~= 1 then l = math.floor(l * factor) end
  return l
end

local now_ms
local function now()
  if not now_ms then
    local t = redis.call('TIME')
    now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  end
  return now_ms
end

-- The fixed window's write (the article's window, from the key's first
-- hit): INCRBY, and PEXPIRE NX, which starts the window at the first hit
-- and mends a key another tool left without a TTL.  It returns the new
-- count, so a rule that counts every attempt decides from it alone, with
-- no read before the write.
local function fixed_commit(state, window)
  local c = redis.pcall('INCRBY', state, cost_arg)
  if type(c) == 'table' then
    if not corrupt(c, true) then error(c) end
    redis.call('DEL', state)
    c = redis.call('INCRBY', state, cost_arg)
  end
  redis.call('PEXPIRE', state, window, 'NX')
  return c
end

-- The rare paths (a subject to record, a crossing to announce) read KEYS
-- and ARGV themselves rather than the locals above: a closure that
-- captures nothing costs next to nothing to make, and every decision
-- makes every closure of the common path.

-- Record the subject under the key, with the first limit's window.
local function record_subject(ttl, corrupt_)
  local subjects_key, subject = KEYS[1], ARGV[6]
  local z = redis.pcall('ZINCRBY', subjects_key, 1, subject)
  if type(z) == 'table' then
    if not corrupt_(z) then error(z) end
    redis.call('DEL', subjects_key)
    redis.call('ZINCRBY', subjects_key, 1, subject)
  end
  if ttl < 1 then ttl = tonumber(ARGV[15]) end	-- limit 1's window
  redis.call('PEXPIRE', subjects_key, ttl)
  local card = redis.call('ZCARD', subjects_key)
  if card > 100 then				-- SUBJECTS_MAX
    redis.call('ZREMRANGEBYRANK', subjects_key, 0, card - 101)
  end
end

-- Record limit i's crossing, once: only the request that creates the
-- "crossed" marker does, and the marker lives as long as the window.
-- Each crossing makes sure the alerters' group is there, from the end of
-- what the stream holds: after the stream or the group is lost (deleted,
-- destroyed, a Redis without persistence restarted) not one crossing
-- written since may be skipped.  If the stream cannot take the entry (its
-- key holds something else), the marker goes again, so that the next
-- request over the limit records the crossing once that is mended.
local function announce(i, count, limit, marker_ttl, now_)
  local crossed, state, stream = KEYS[3 + 2 * i], KEYS[2 + 2 * i], KEYS[2]
  if not redis.call('SET', crossed, '1', 'NX', 'PX', marker_ttl) then
    return 0
  end
  local g = redis.pcall('XGROUP', 'CREATE', stream, ARGV[13], '$',
    'MKSTREAM')
  if type(g) == 'table' and g.err and
      string.sub(g.err, 1, 9) ~= 'BUSYGROUP' then
    redis.call('DEL', crossed)
    error(g)
  end
  local window = tonumber(ARGV[13 + 3 * i - 1])
  local t = math.floor(now_() / 1000)
  local shadow = ARGV[10] == '1'
  local id = redis.pcall('XADD', stream, 'MAXLEN', '~', ARGV[7], '*',
    'rule', ARGV[1], 'key', ARGV[2], 'count', count, 'limit', limit,
    'window_ms', window, 'time', t, 'host', ARGV[4],
    'counter', state, 'subjects', KEYS[1],
    'algorithm', ARGV[9], 'cost', ARGV[3], 'shadow', shadow and 1 or 0)
  if type(id) == 'table' then
    redis.call('DEL', crossed)
    error(id)
  end
  redis.call('PUBLISH', ARGV[5], cjson.encode({
    type = 'threshold', id = id, rule = ARGV[1], key = ARGV[2],
    count = count, limit = limit, window = window / 1000,
    limit_index = i, algorithm = ARGV[9], time = t, host = ARGV[4],
    shadow = shadow,
  }))
  return 1
end

-- Count first: a fixed window that counts every attempt needs nothing
-- but the write, limit by limit.
if algorithm == 'fixed' and count_denied and mode ~= 'peek' then
  local decided, dcount, crossed, ttl1 = 0, 0, 0, -1
  for i = 1, n do
    local state = KEYS[2 + 2 * i]
    local window = ARGV[FIXED_ARGS + 3 * i - 1]
    local c = fixed_commit(state, window)
    local limit = limit_of(i)
    if c > limit then
      if decided == 0 then decided, dcount = i, c end
      local ttl = redis.call('PTTL', state)
      if i == 1 then ttl1 = ttl end
      crossed = crossed + announce(i, c, limit, ttl > 0 and ttl or window,
        now)
    elseif i == 1 then
      dcount = c
    end
  end
  if subject ~= '' then
    if ttl1 < 0 then ttl1 = redis.call('PTTL', KEYS[4]) end
    record_subject(ttl1, corrupt)
  end
  return reply(decided > 0, dcount, ttl1, crossed, decided, override)
end

-- Every other case in two phases: probe() works out what this request
-- would make a limit (count, over, the TTL where known), then commit()
-- writes all limits or none, so a denied request is not half counted.

local limits = {}
for i = 1, n do
  local burst = tonumber(ARGV[FIXED_ARGS + 3 * i])
  if factor ~= 1 then burst = math.floor(burst * factor) end
  limits[i] = { limit = limit_of(i),
    window = tonumber(ARGV[FIXED_ARGS + 3 * i - 1]), burst = burst,
    state = KEYS[2 + 2 * i] }
end

local fixed, sliding, gcra = {}, {}, {}

function fixed.probe(lim)
  local v = redis.pcall('GET', lim.state)
  if type(v) == 'table' or (v and (not string.match(v, '^%-?%d+$') or
      #v > 18)) then
    if type(v) == 'table' and not corrupt(v) then error(v) end
    redis.call('DEL', lim.state)
    v = nil
  end
  lim.count = (tonumber(v) or 0) + cost
  lim.over = lim.count > lim.limit
end
function fixed.commit(lim)
  fixed_commit(lim.state, lim.window)
end

-- Sliding-window counter: the previous bucket's count, weighted by how
-- much of it still lies inside the window, plus this bucket's.
function sliding.probe(lim)
  local h = redis.pcall('HMGET', lim.state, 'i', 'c', 'p')
  if h.err then
    if not corrupt(h) then error(h) end
    redis.call('DEL', lim.state)
    h = {}
  end
  local idx = math.floor(now() / lim.window)
  local bi, c, p = tonumber(h[1]), tonumber(h[2]) or 0, tonumber(h[3]) or 0
  if bi ~= idx then
    if bi == idx - 1 then p = c else p = 0 end
    c = 0
  end
  local elapsed = now() - idx * lim.window
  local est = p * (lim.window - elapsed) / lim.window + c
  lim.idx, lim.c, lim.p = idx, c, p
  lim.count = math.floor(est + cost)
  lim.over = est + cost > lim.limit
  lim.ttl = lim.window - elapsed
end
function sliding.commit(lim)
  redis.call('HSET', lim.state, 'i', lim.idx, 'c', lim.c + cost, 'p', lim.p)
  -- Kept until the next bucket no longer needs it as "previous".
  redis.call('PEXPIRE', lim.state, lim.ttl + lim.window)
end

-- GCRA: one emission interval per unit of cost; the theoretical arrival
-- time may run ahead of now by at most the burst tolerance.  The key
-- expires exactly at the TAT, so its TTL is the state and the value is a
-- shared small integer: no memory for a timestamp.
function gcra.probe(lim)
  local interval = lim.window / lim.limit
  local pttl = redis.call('PTTL', lim.state)
  local tat = now()
  if pttl > 0 then tat = now() + pttl end
  local new_tat = tat + cost * interval
  lim.new_ttl = math.max(math.ceil(new_tat - now()), 1)
  lim.over = new_tat - now() > lim.burst * interval
  lim.count = math.ceil((new_tat - now()) / interval)
  lim.ttl = math.max(pttl, 0)
end
function gcra.commit(lim)
  redis.call('SET', lim.state, 1, 'PX', lim.new_ttl)
  lim.ttl = lim.new_ttl
end

local alg = (algorithm == 'sliding' and sliding) or
  (algorithm == 'gcra' and gcra) or fixed

-- A limit's TTL, looked up only where something needs it.
local function ttl_of(lim)
  if not lim.ttl then lim.ttl = redis.call('PTTL', lim.state) end
  return lim.ttl
end

for i = 1, n do alg.probe(limits[i]) end

local over, decided = false, 0
for i = 1, n do
  if limits[i].over and not over then over, decided = true, i end
end
local first = limits[decided > 0 and decided or 1]

if mode == 'peek' then
  return reply(over, first.count - cost, ttl_of(first), 0, decided, override)
end

if not over or count_denied then
  for i = 1, n do alg.commit(limits[i]) end
end

if subject ~= '' then
  record_subject(ttl_of(limits[1]), corrupt)
end

local crossed = 0
for i = 1, n do
  local lim = limits[i]
  if lim.over then
    local ttl = lim.window
    if algorithm == 'fixed' and ttl_of(lim) > 0 then ttl = lim.ttl end
    crossed = crossed + announce(i, lim.count, lim.limit, ttl, now)
  end
end

return reply(over, first.count, first.ttl, crossed, decided, override)
