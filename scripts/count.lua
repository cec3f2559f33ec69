--[[
senderwatch count.lua: check and count one request of a key against every
limit of a rule, decide, and announce each limit's first crossing.
senderwatch-shim loads it with SCRIPT LOAD and runs it with EVALSHA; it runs
by hand too (one limit of 20 per 5 minutes, fixed window):

  redis-cli --eval scripts/count.lua \
      senderwatch:subjects:default:alice@example.org senderwatch:stream \
      senderwatch:override:default:alice@example.org \
      senderwatch:default:alice@example.org \
      senderwatch:crossed:default:alice@example.org , \
      default alice@example.org 1 mta1 senderwatch:events "" 10000 \
      count fixed 0 1 1 20 300000 20

KEYS[1]  subjects   PREFIX:subjects:RULE:KEY   zset subject -> count, with the
                                               first limit's TTL
KEYS[2]  stream     events.stream              capped record of threshold
                                               events, read by the alerters
KEYS[3]  override   PREFIX:override:RULE:KEY   optional runtime override set
                                               by an admin: "allow", "block"
                                               or "xF" (multiply limits by F)
KEYS[4+2i]  state   PREFIX:RULE[.WIN]:KEY      limit i's state: fixed: an
                                               integer count; sliding: a hash
                                               {i bucket, c count, p previous};
                                               gcra: 1, expiring at the
                                               theoretical arrival time.
                                               Always with a TTL.
KEYS[5+2i]  crossed PREFIX:crossed:RULE[.WIN]:KEY  set while limit i is over:
                                               one event per crossing

ARGV[1]  rule name          ARGV[2]  key as escaped in the key names
ARGV[3]  cost: plain digits, 0 to 999999999 (with mode=peek, 0 asks
         whether the key is over already)
ARGV[4]  reporting host
ARGV[5]  events channel     ARGV[6]  subject to record, or ""
ARGV[7]  stream MAXLEN ~    ARGV[8]  mode: "count", or "peek" (read only)
ARGV[9]  algorithm: fixed | sliding | gcra
ARGV[10] shadow: 1 counts and announces but the answer is always no
ARGV[11] count_denied: 1 adds the cost even when the answer is yes
ARGV[12] factor from the config's per-key override (1 = none)
ARGV[13..] per limit: limit, window in ms, burst (gcra; else ignored)

Reply: { answer (1 yes, 0 no), count, ttl_ms (-1: not looked up),
crossed (1 if this request published an event), limit number that decided
(1-based, 0 none), over (1 if a limit is exceeded, even in shadow mode),
override (0 none,
1 allow, 2 block, 3 factor) }

Exactly once: a limit's crossing is announced only by the request that
creates its "crossed" marker (SET NX), and the script is atomic, so any
number of shims publish one event per crossing.
]]

local subjects_key, stream, override_key = KEYS[1], KEYS[2], KEYS[3]
local rule, key = ARGV[1], ARGV[2]
local cost = tonumber(ARGV[3])
local subject, mode, algorithm = ARGV[6], ARGV[8], ARGV[9]
local shadow = ARGV[10] == '1'
local count_denied = ARGV[11] == '1'
local factor = tonumber(ARGV[12])
local n = (#ARGV - 12) / 3

-- INCRBY is given ARGV[3] as written: turning a Lua number back into a
-- string (sprintf "%.14g") cost more per window than the INCRBY itself.
-- So the cost must be plain digits INCRBY accepts, or counting stops here
-- rather than mistaking INCRBY's refusal for a corrupt counter.
local cost_arg = ARGV[3]
if not (cost_arg == '0' or (#cost_arg <= 9 and
    string.match(cost_arg, '^[1-9]%d*$'))) then
  return redis.error_reply('ERR cost must be a whole number from 0 to 999999999')
end

local SUBJECTS_MAX = 100	-- subjects kept per key: a top 10 and then some

-- Runtime override, set with scripts/override.lua or plain redis-cli.
local override = 0
local ov = redis.pcall('GET', override_key)
if type(ov) == 'string' then
  if ov == 'allow' then
    return { 0, 0, -1, 0, 0, 0, 1 }
  elseif ov == 'block' then
    return { shadow and 0 or 1, 0, -1, 0, 0, 1, 2 }
  elseif string.sub(ov, 1, 1) == 'x' and tonumber(string.sub(ov, 2)) then
    factor = tonumber(string.sub(ov, 2))
    override = 3
  end
end

-- Limit i's numbers, scaled by an override's factor.
local function limit_of(i)
  local l = tonumber(ARGV[10 + 3 * i])
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

-- Record the subject under the key, with the first limit's window.
local function record_subject(ttl)
  local z = redis.pcall('ZINCRBY', subjects_key, 1, subject)
  if type(z) == 'table' then
    redis.call('DEL', subjects_key)
    redis.call('ZINCRBY', subjects_key, 1, subject)
  end
  if ttl < 1 then ttl = tonumber(ARGV[14]) end
  redis.call('PEXPIRE', subjects_key, ttl)
  local card = redis.call('ZCARD', subjects_key)
  if card > SUBJECTS_MAX then
    redis.call('ZREMRANGEBYRANK', subjects_key, 0, card - SUBJECTS_MAX - 1)
  end
end

-- Announce limit i's crossing, once: only the request that creates the
-- "crossed" marker does, and the marker lives as long as the window.
local function announce(i, count, limit, marker_ttl)
  if not redis.call('SET', KEYS[3 + 2 * i], '1', 'NX', 'PX', marker_ttl) then
    return 0
  end
  local window = tonumber(ARGV[11 + 3 * i])
  local t = math.floor(now() / 1000)
  local id = redis.call('XADD', stream, 'MAXLEN', '~', ARGV[7], '*',
    'rule', rule, 'key', key, 'count', count, 'limit', limit,
    'window_ms', window, 'time', t, 'host', ARGV[4],
    'counter', KEYS[2 + 2 * i], 'subjects', subjects_key,
    'algorithm', algorithm, 'limit_index', i, 'cost', cost,
    'shadow', shadow and 1 or 0)
  redis.call('PUBLISH', ARGV[5], cjson.encode({
    type = 'threshold', id = id, rule = rule, key = key,
    count = count, limit = limit, window = window / 1000,
    limit_index = i, algorithm = algorithm, time = t, host = ARGV[4],
    shadow = shadow,
  }))
  return 1
end

-- The common case, kept tight: fixed windows counting every attempt.
-- INCRBY returns the new count, so each limit costs two calls and no
-- read before the write.  PEXPIRE NX starts the window at the first hit
-- and mends a key that another tool left without a TTL.
if algorithm == 'fixed' and count_denied and mode ~= 'peek' then
  local decided, dcount, crossed, ttl1 = 0, 0, 0, -1
  for i = 1, n do
    local k = KEYS[2 + 2 * i]
    local c = redis.pcall('INCRBY', k, cost_arg)
    if type(c) == 'table' then		-- not an integer: start afresh
      redis.call('DEL', k)
      c = redis.call('INCRBY', k, cost_arg)
    end
    redis.call('PEXPIRE', k, ARGV[11 + 3 * i], 'NX')
    local limit = limit_of(i)
    if c > limit then
      if decided == 0 then decided, dcount = i, c end
      local ttl = redis.call('PTTL', k)
      if i == 1 then ttl1 = ttl end
      crossed = announce(i, c, limit, ttl > 0 and ttl or ARGV[11 + 3 * i])
        + crossed
    elseif i == 1 then
      dcount = c
    end
  end
  if subject ~= '' then
    if ttl1 < 0 then ttl1 = redis.call('PTTL', KEYS[4]) end
    record_subject(ttl1)
  end
  local over = decided > 0
  return { (over and not shadow) and 1 or 0, dcount, ttl1,
    crossed > 0 and 1 or 0, decided, over and 1 or 0, override }
end

-- A value of the wrong type, or a string INCRBY would refuse (left by
-- another tool, or by an algorithm change), is replaced rather than
-- allowed to fail every request and keep the key without a TTL.
local function get_string(k)
  local v = redis.pcall('GET', k)
  if type(v) == 'table' or
      (v and (not string.match(v, '^%-?%d+$') or #v > 18)) then
    redis.call('DEL', k)
    return nil
  end
  return v
end

-- Everything else in two phases: work out what this request would make
-- each limit, then commit all limits or none, so a denied request is not
-- half counted.
local limits = {}
for i = 1, n do
  local lim = {
    limit = limit_of(i),
    window = tonumber(ARGV[11 + 3 * i]),
    state = KEYS[2 + 2 * i],
  }
  if algorithm == 'fixed' then
    local c = tonumber(get_string(lim.state)) or 0
    lim.count = c + cost
    lim.over = lim.count > lim.limit
  elseif algorithm == 'sliding' then
    -- Sliding-window counter: the previous bucket's count, weighted by
    -- how much of it still lies inside the window, plus this bucket's.
    local h = redis.pcall('HMGET', lim.state, 'i', 'c', 'p')
    if h.err then
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
  else
    -- GCRA: one emission interval per unit of cost; the theoretical
    -- arrival time may run ahead of now by at most the burst tolerance.
    -- The key expires exactly at the TAT, so its TTL is the state and
    -- the value is a shared small integer: no memory for a timestamp.
    local burst = tonumber(ARGV[12 + 3 * i])
    if factor ~= 1 then burst = math.floor(burst * factor) end
    local interval = lim.window / lim.limit
    local pttl = redis.call('PTTL', lim.state)
    local tat = now()
    if pttl > 0 then tat = now() + pttl end
    local new_tat = tat + cost * interval
    lim.new_ttl = math.max(math.ceil(new_tat - now()), 1)
    lim.over = new_tat - now() > burst * interval
    lim.count = math.ceil((new_tat - now()) / interval)
    lim.ttl = math.max(pttl, 0)
  end
  limits[i] = lim
end

local over, decided = false, 0
for i = 1, n do
  if limits[i].over and not over then over, decided = true, i end
end

-- TTLs are looked up only where something needs them.
local function ttl_of(lim)
  if not lim.ttl then lim.ttl = redis.call('PTTL', lim.state) end
  return lim.ttl
end

if mode == 'peek' then
  local lim = limits[decided > 0 and decided or 1]
  return { (over and not shadow) and 1 or 0, lim.count - cost, ttl_of(lim), 0,
    decided, over and 1 or 0, override }
end

if not over or count_denied then
  for i = 1, n do
    local lim = limits[i]
    if algorithm == 'fixed' then
      redis.call('INCRBY', lim.state, cost_arg)
      redis.call('PEXPIRE', lim.state, lim.window, 'NX')
    elseif algorithm == 'sliding' then
      redis.call('HSET', lim.state, 'i', lim.idx, 'c', lim.c + cost,
        'p', lim.p)
      -- Kept until the next bucket no longer needs it as "previous".
      redis.call('PEXPIRE', lim.state, lim.ttl + lim.window)
    else
      redis.call('SET', lim.state, 1, 'PX', lim.new_ttl)
      lim.ttl = lim.new_ttl
    end
  end
end

if subject ~= '' then
  record_subject(ttl_of(limits[1]))
end

local crossed = 0
for i = 1, n do
  local lim = limits[i]
  if lim.over then
    crossed = crossed + announce(i, lim.count, lim.limit,
      (algorithm == 'fixed' and ttl_of(lim) > 0) and lim.ttl or lim.window)
  end
end

local lim = limits[decided > 0 and decided or 1]
return { (over and not shadow) and 1 or 0, lim.count, lim.ttl or -1,
  crossed > 0 and 1 or 0, decided, over and 1 or 0, override }
