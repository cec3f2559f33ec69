--[[
senderwatch count.lua: check and count requests against every limit of a
rule, decide each, and record each limit's first crossing.  One call takes
one decision or several of one rule (the shim sends the decisions one
loop turn made together: Redis's fixed cost of a call is then paid once
for all): with their keys declared, of one hash slot; or named, each
by its key (as escaped in key names) alone, the script making the names:
on a single Redis, or on a Redis Cluster's node of any slots it serves
(below).
senderwatch-shim loads it with SCRIPT LOAD and runs it with EVALSHA; it
runs by hand too (one limit of 20 per 5 minutes, fixed window, one
decision):

  redis-cli --eval scripts/count.lua senderwatch:stream \
      senderwatch:subjects:default:alice@example.org \
      senderwatch:override:default:alice@example.org \
      senderwatch:default:alice@example.org \
      senderwatch:crossed:default:alice@example.org , \
      cf011 1 \
      "default mta1 senderwatch:events 10000 senderwatch-alerters 29 18" \
      20 300000 20 1 ""

KEYS[1]  stream     events.stream              capped record of threshold
                                               events, read by the alerters
then, for each decision d = 1 .. m, from b = 1 + (d - 1) * (2 + 2n):
KEYS[b+1]  subjects PREFIX:subjects:RULE:KEY   zset subject -> count, with the
                                               first limit's TTL
KEYS[b+2]  override PREFIX:override:RULE:KEY   optional runtime override set
                                               by an admin: "allow", "block"
                                               or "xF" (multiply limits by F)
KEYS[b+1+2i]  state PREFIX:RULE[.WIN]:KEY      limit i's state: fixed: an
                                               integer count; sliding: a hash
                                               {i bucket, c count, p previous};
                                               gcra: 1, expiring at the
                                               theoretical arrival time.
                                               Always with a TTL (one
                                               another tool took away:
                                               see fixed_commit()).
KEYS[b+2+2i]  crossed PREFIX:crossed:RULE[.WIN]:KEY  set while limit i is
                                               over: one event per crossing
  (i = 1 .. n, n from 1 to 8: 1 + m * (2 + 2n) keys)

ARGV[1]  flags, five characters and two optional parts: the mode (c
         count, p peek: read only), the algorithm (f fixed, s sliding, g
         gcra), shadow (1: counts and announces, but the answer is always
         no), count_denied (1: the
         cost is added even when the answer is yes), and n, the number of
         limits (1 to 8); then u, where the decisions share one cost and
         subject: they are then given once, as decision 1's (below), and
         each count of arguments below has 2 for its 2m (3m is 2 + m, 4m
         is 2 + 2m); then, where the caller knows some keys have no
         runtime override, k and a character per decision: 1, this
         script answered the key without one (override 0) less than a
         second ago, so it is not read again (a plain SET of one shows
         within a second; the shim's ovcache.c); 0, it is read.  Without
         k, every decision reads its key's override.
ARGV[2]  factor from the config's per-key override (1 = none)
ARGV[3]  what a crossing records, seven words separated by one space:
         the rule's name, the reporting host, the events channel, the
         stream's MAXLEN ~, the alerters' consumer group (made with the
         stream, see announce), where in the override key's name the key
         (as escaped in key names) starts, in bytes, less the shard's tag,
         and the length of the stream's name less its tag (a shard's
         tag is what its stream's name has past that length)
ARGV[1+3i], ARGV[2+3i], ARGV[3+3i]  limit i: limit, window in ms, burst
         (gcra; else ignored)
then, for each decision d, from a = 3 + 3n + 2 * (d - 1):
ARGV[a+1]  cost: plain digits, 0 to COST_MAX (with mode peek, 0 asks
           whether the key is over already)
ARGV[a+2]  subject to record, or ""
  (3 + 3n + 2m arguments)

Named calls.  Every string a call carries costs Redis its making, and
a decision's names are mostly what its decisions share: each is the
prefix (PREFIX:, and in a Cluster the shard's tag, {s3.41}:), a middle
(subjects:RULE:, override:RULE:, RULE[.WIN]:, crossed:RULE[.WIN]:) and
the key.  So a named call gives the prefix and the 2 + 2n middles once,
in the order above, from ARGV[p + 1], p = 3 + 3n + 2m, and each decision
brings its key alone; the script makes a name only as the decision uses
it, and a crossing records the key as given.  Two of them:

A single Redis's (where nothing routes a call by its keys): KEYS[1] the
stream alone; ARGV[p + 1] the prefix with the shard's tag, ARGV[p + 1 +
j] middle j, then decision d's key ARGV[p + 3 + 2n + d] (6 + 5n + 3m
arguments).

A node's (a Redis Cluster's master, the decisions of any slots it
serves): no KEYS; ARGV[p + 1] the prefix, ARGV[p + 1 + j] middle j,
ARGV[p + 4 + 2n] the stream's name less its tag, then for decision d
its shard's tag and its key, ARGV[p + 3 + 2n + 2d] and ARGV[p + 4 + 2n +
2d] (7 + 5n + 4m arguments); the decision's stream is the stream's name
and, where it has a tag, ':' and the tag less its colon.  Redis checks
each key as it is used: a decision it refuses before writing (its slot
served elsewhere or moving, the cluster down) replies "ELSEWHERE ...",
to be sent again with its keys declared.  The shim sends a lone
decision declared.  This script has no shebang line on purpose: Redis 7
lets a script with flags touch keys of one slot only (unless it has
allow-cross-slot-keys), and a node's call spans slots.

Every argument is a string Redis makes for each call: what only a
crossing needs shares one, and what the decisions of a call share is
given once.

Reply: for one decision, the count alone, an integer, when no limit is over
and no runtime override applies (the common case, where converting a
table would cost Redis more than the decision's commands; crossed and
the rest are 0, the TTL not looked up); else { answer (1 yes, 0 no),
count, ttl_ms (-1: not looked up), crossed (1 if this request recorded
an event), limit number that decided (1-based, 0 none), over (1 if a
limit is exceeded, even in shadow mode), override (0 none, 1 allow, 2
block, 3 factor), hold_ms, count_ms }, or an error: a bad cost, or an
error of Redis itself.  Several decisions: an array of their replies in
their order, an error among them being that decision's alone.  The call
itself is an error for a wrong number of keys or arguments, bad flags or
factor, and for OOM or READONLY: a full Redis's OOM, like a replica's
READONLY, comes at a call's first write and leaves every key as it was
(Redis lets a script that has written go on, so where one decision got
it none wrote); an error after it (a stream key of
another type, a malformed ARGV[3]) leaves the counts as they were
counted, records no crossing, and sets no marker.

hold_ms, for the shim's near cache: with answer 1, for how many ms from
now every request of this key is answered 1 again, whatever any shim
counts meanwhile, as long as no override changes: for a request of this
cost or more, or of any cost where this request was counted (mode count,
count_denied).  The longest hold of the limits that are over: a fixed
window's end; for sliding and gcra the time the limit frees up, worked
out from the state read.  -1: held by a block override; 0: answer 0, or
nothing to hold.  count_ms, with answer 1 and a request counted: for how
many ms every limit's window (a sliding bucket, a gcra TAT ahead of now)
stays the one this request was counted in, so that a cost added within it
counts as this one did; 0 otherwise.

Exactly once: a limit's crossing is recorded only by the request that
creates its "crossed" marker (SET NX), and the script is atomic, so any
number of shims record one event per crossing.  The stream entry's fields
are common/keyspace.h's keyspace_fields[], in that order.
]]

local HEAD = 3			-- ARGV before the limits: flags, factor, meta
local MEND = 16			-- fixed_commit(): a counter without a TTL
				-- is mended within a MEND-th of its limit
local COST_MAX = 1000000	-- common/keyspace.h: KEYSPACE_COST_MAX, and so
				-- at most 6 digits or '1000000' below

local flags = ARGV[1]
local f_mode, f_alg, f_shadow, f_denied, f_n, f_u =
  string.byte(flags or '', 1, 6)
local n = (f_n or 0) - 48
local per = 2 + 2 * n
-- The sixth flag, u: the decisions share one cost and subject, given once.
local aa = f_u == 117 and 0 or 2	-- a decision's own arguments
local ac = 2 - aa			-- the call's shared ones
-- Where the keys are: declared, decision d's from KEYS[kb + 1] on, kb =
-- ko + 1 + (d - 1) * kstep; or named (pb set), the prefix ARGV[pb], the
-- middles ARGV[pb + j], decision d's key ARGV[kb] (and in a node's call
-- its tag ARGV[kb - 1]).  m is whole only when the count matches n, so
-- one comparison checks both.
local ko, kstep, m, pb = 0, per, (#KEYS - 1) / per, nil
local node = #KEYS == 0
-- Set by a decision at its first write: Redis may refuse a key of a
-- node's call (below) only where none was written yet, for the shim to
-- send the decision again.
local wrote = false
if #KEYS <= 1 then
  local step = node and 2 or 1
  m = (#ARGV - HEAD - 3 * n - ac - 1 - per - (node and 1 or 0)) /
    (step + aa)
  pb = HEAD + 3 * n + ac + aa * m + 1
  ko, kstep = pb + per + (node and 2 or 0), step
end
local nflags = #(flags or '')
-- The flags' k, where there is one: decision d's knowledge of its
-- override is the character past it, ARGV[1][known + d].  A node's call
-- reads every override all the same: that GET is what has Redis refuse a
-- decision of a slot moving away before it writes (its counter may still
-- be here, its other keys not).
local fbase = f_u == 117 and 6 or 5
local known = string.byte(flags or '', fbase + 1) == 107 and fbase + 1 or nil
local skip = known and not node
if n < 1 or n > 8 or m < 1 or m ~= math.floor(m) or
    #ARGV ~= HEAD + 3 * n + ac + aa * m +
    (pb and 1 + per + (node and 1 + 2 * m or m) or 0) then
  return redis.error_reply(string.format('ERR count.lua: got %d keys and '
    .. '%d arguments; m decisions of a rule of n limits (n, 1 to 8, the '
    .. 'fifth flag) take 1 + m(2 + 2n) keys and %d + 3n + 2m arguments, '
    .. 'or 1 key and %d + 5n + 3m arguments, or no keys and %d + 5n + 4m '
    .. 'arguments (with the sixth flag, u, 2 for each 2m)', #KEYS, #ARGV,
    HEAD, HEAD + 3, HEAD + 4))
end
-- The common factor, 1, without tonumber(): two strtod()s a call.
local call_factor = ARGV[2] == '1' and 1 or tonumber(ARGV[2])
if not (f_mode == 99 or f_mode == 112) or
    not (f_alg == 102 or f_alg == 115 or f_alg == 103) or
    not (f_shadow == 48 or f_shadow == 49) or
    not (f_denied == 48 or f_denied == 49) or
    not (nflags == fbase or (known and nflags == known + m and
      not string.find(flags, '[^01]', known + 1))) or
    not call_factor then
  return redis.error_reply('ERR count.lua: flags must be [cp][fsg][01][01]'
    .. '[1-8], then u or nothing, then k and a 0 or 1 per decision or '
    .. 'nothing, and the factor a number')
end

-- One decision: its keys from KEYS[kb + 1] (or, pb set, its names made
-- of pre, its prefix, the middles ARGV[pb + j] and its key ARGV[kb]), its
-- cost and subject from ARGV[ab + 1], what the call's decisions share as
-- the other arguments (pb among them: an upvalue would cost a call its
-- making).
-- Redis's CPU per decision is what a cluster pays for: the common case (a
-- fixed window counting every attempt, under its limits) runs first and
-- makes no closure, and no table but, with several limits, their
-- counts'; nor does the call around it (a table or a closure made per
-- call costs Redis its allocation and its collection).  What it does not
-- need is defined after it.
local function decide(kb, stream, ab, n, factor_, f_mode, f_alg, shadow,
    count_denied, limit1, pb, pre, no_override, counted)

-- INCRBY is given the cost as written: turning a Lua number back into a
-- string (sprintf "%.14g") cost more per window than the INCRBY itself.
-- So the cost must be plain digits INCRBY accepts.
local cost_arg, subject, factor = ARGV[ab + 1], ARGV[ab + 2], factor_
if cost_arg ~= '1' and not (cost_arg == '0' or ((#cost_arg < 7 or
    cost_arg == '1000000') and string.match(cost_arg, '^[1-9]%d*$'))) then
  return redis.error_reply('ERR cost must be a whole number from 0 to '
    .. COST_MAX)
end

-- Runtime override, set with scripts/override.lua or plain redis-cli.  A
-- key of another type there (WRONGTYPE) is not an override.  Not read
-- where the caller found none within the last second (no_override): the
-- GET of a key that is not there was a quarter of a decision's cost.
local override = 0
-- (A name made here as key_of(), below, makes it.)
local ov = not no_override and redis.pcall('GET', pb and
  pre .. ARGV[pb + 2] .. ARGV[kb] or KEYS[kb + 2])
if ov then
  -- Undeclared keys (a node's call): GET found this key here, so Redis
  -- checks the rest of them before anything is written (a slot that is
  -- moving and has some of them only fails the decision here).
  if not stream then
    local names = {}
    for j = 1, 2 + 2 * n do names[j] = pre .. ARGV[pb + j] .. ARGV[kb] end
    redis.call('EXISTS', unpack(names))
  end
  if type(ov) == 'table' then
    if string.sub(ov.err, 1, 9) ~= 'WRONGTYPE' then error(ov) end
  elseif ov == 'allow' then
    return { 0, 0, -1, 0, 0, 0, 1, 0, 0 }
  elseif ov == 'block' then
    -- Counted nowhere: a cost held back is counted as this one was.
    if shadow then return { 0, 0, -1, 0, 0, 1, 2, 0, 0 } end
    return { 1, 0, -1, 0, 0, 1, 2, -1, -1 }
  elseif string.sub(ov, 1, 1) == 'x' and tonumber(string.sub(ov, 2)) then
    factor = tonumber(string.sub(ov, 2))
    override = 3
  end
end

-- The fixed window that counts every attempt: INCRBY, and where needed
-- PEXPIRE NX (fixed_commit(), below, says when), limit by limit.  The new
-- counts decide alone, with no read before the write.  Only what is
-- over, or a subject, goes on to the code below (fixed_tail), with the
-- counts made here.  counted: the counts of the limits whose INCRBY
-- and PEXPIRE the call's loop below made already (it found the key over
-- a limit, or a write was refused), limit by limit.
local fixed_counts
if f_alg == 102 and count_denied and f_mode == 99 then
  local over, c1 = false, 0
  local cn = cost_arg == '1' and 1 or tonumber(cost_arg)
  for i = 1, n do
    local state = pb and pre .. ARGV[pb + 1 + 2 * i] .. ARGV[kb] or
      KEYS[kb + 1 + 2 * i]
    local given = counted and counted[i]
    local c = given or redis.pcall('INCRBY', state, cost_arg)
    if type(c) == 'table' then
      -- Corrupt only as the code below defines it (corrupt()).  (A node
      -- refusing the key, where the override was not read, is the first
      -- key it saw: nothing was written, see ELSEWHERE.)
      local e = c.err
      if string.sub(e, 1, 9) ~= 'WRONGTYPE' and
          not string.find(e, 'not an integer', 1, true) and
          not string.find(e, 'overflow', 1, true) then
        error(c)
      end
      wrote = true
      redis.call('DEL', state)
      c = redis.call('INCRBY', state, cost_arg)
    end
    wrote = true
    local limit = i == 1 and limit1 or tonumber(ARGV[1 + 3 * i])
    if factor ~= 1 then limit = math.floor(limit * factor) end
    -- As fixed_commit() (inlined: a call costs Redis here); a count
    -- given had its PEXPIRE by the same rule.
    if not given and (c <= cn or c > limit or
        c % (limit >= 2 * MEND and math.floor(limit / MEND) or 1) < cn) then
      redis.call('PEXPIRE', state, ARGV[2 + 3 * i], 'NX')
    end
    if c > limit then over = true end
    if i == 1 then
      c1 = c
    else
      fixed_counts = fixed_counts or { c1 }
      fixed_counts[i] = c
    end
  end
  if not over and subject == '' then
    -- The count alone: converting a reply table costs Redis more than
    -- the commands above.
    if override == 0 then return c1 end
    return { 0, c1, -1, 0, 0, 0, override, 0, 0 }
  end
  fixed_counts = fixed_counts or { c1 }
end

local cost = tonumber(cost_arg)
-- Key j (1 subjects, 2 override, 1 + 2i and 2 + 2i limit i's state and
-- crossed marker), given or (a named call) named here.
local function key_of(j)
  if pb then return pre .. ARGV[pb + j] .. ARGV[kb] end
  return KEYS[kb + j]
end
local now_ms
local function now()
  if not now_ms then
    local t = redis.call('TIME')
    now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  end
  return now_ms
end
local mode = f_mode == 112 and 'peek' or 'count'
local algorithm = (f_alg == 115 and 'sliding') or (f_alg == 103 and 'gcra')
  or 'fixed'

-- Errors.  Only a value of the wrong type, or a string INCRBY refuses, is
-- corrupt: left by another tool or an algorithm change, it is replaced
-- rather than allowed to fail every request and keep the key without a
-- TTL.  Every other error (OOM on a full Redis, READONLY, BUSY...) is
-- raised as it is: the decision stops, nothing is replaced, and the shim
-- answers its fail policy and says why.  A full Redis must never look like
-- an empty one.
local function corrupt(e, incr)
  return string.sub(e.err, 1, 9) == 'WRONGTYPE' or (incr and
    (string.find(e.err, 'not an integer', 1, true) or
     string.find(e.err, 'overflow', 1, true)))
end

-- The one reply: see the contract above.
local function reply(over, count, ttl, crossed, decided, override_, hold,
    count_ms)
  if not over and override_ == 0 then return count end
  local yes = over and not shadow
  return { yes and 1 or 0, count, ttl or -1, crossed > 0 and 1 or 0,
    decided, over and 1 or 0, override_, yes and hold or 0,
    yes and count_ms or 0 }
end

-- Limit i's limit, with an override's factor applied.
local function limit_of(i)
  local l = tonumber(ARGV[1 + 3 * i])
  if factor ~= 1 then l = math.floor(l * factor) end
  return l
end

-- The fixed window's write (the article's window, from the key's first
-- hit): INCRBY, and PEXPIRE NX where the window may lack its TTL, which
-- starts the window at the first hit and mends a counter another tool
-- left without one.  PEXPIRE is a fifth of a decision's cost, and a
-- counter this script made has its TTL from its first hit on, so it is
-- sent where the count is the cost alone (the key new, replaced, or set
-- to 0 by another tool), where it is over the limit (before it can
-- answer yes, or be held by a near cache), and as the count passes a
-- multiple of a MEND-th of the limit: a counter some tool set without a
-- TTL below the limit is mended before it has counted that share more.
local function fixed_commit(state, window, limit)
  wrote = true
  local c = redis.pcall('INCRBY', state, cost_arg)
  if type(c) == 'table' then
    if not corrupt(c, true) then error(c) end
    redis.call('DEL', state)
    c = redis.call('INCRBY', state, cost_arg)
  end
  if c <= cost or c > limit or
      c % (limit >= 2 * MEND and math.floor(limit / MEND) or 1) < cost then
    redis.call('PEXPIRE', state, window, 'NX')
  end
  return c
end

-- Record the subject under the key, with the first limit's window.
local function record_subject(ttl)
  wrote = true
  local subjects_key = key_of(1)
  local z = redis.pcall('ZINCRBY', subjects_key, 1, subject)
  if type(z) == 'table' then
    if not corrupt(z) then error(z) end
    redis.call('DEL', subjects_key)
    redis.call('ZINCRBY', subjects_key, 1, subject)
  end
  if ttl < 1 then ttl = tonumber(ARGV[5]) end
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
local function announce(i, count, limit, marker_ttl)
  local crossed, state = key_of(2 + 2 * i), key_of(1 + 2 * i)
  local rule, host, channel, maxlen, group, keyoff, sbase = string.match(
    ARGV[3], '^(%S+) (%S+) (%S+) (%d+) (%S+) (%d+) (%d+)$')
  if not rule then
    error({ err = 'ERR count.lua: ARGV[3] must be seven words: rule host '
      .. 'channel maxlen group key-offset stream-base' })
  end
  -- The shard's tag, where there is one, is what the stream's name has
  -- past its base, and the override key's name has it too.
  -- A node's call gives the stream's name without the shard's tag.
  if not stream then
    local tag = ARGV[kb - 1]
    stream = ARGV[pb + 3 + 2 * n]
    if tag ~= '' then stream = stream .. ':' .. string.sub(tag, 1, -2) end
  end
  local key = pb and ARGV[kb] or string.sub(KEYS[kb + 2],
    tonumber(keyoff) + #stream - tonumber(sbase) + 1)
  wrote = true
  if not redis.call('SET', crossed, '1', 'NX', 'PX', marker_ttl) then
    return 0
  end
  local g = redis.pcall('XGROUP', 'CREATE', stream, group, '$', 'MKSTREAM')
  if type(g) == 'table' and g.err and
      string.sub(g.err, 1, 9) ~= 'BUSYGROUP' then
    redis.call('DEL', crossed)
    error(g)
  end
  local window = tonumber(ARGV[2 + 3 * i])
  local t = math.floor(now() / 1000)
  local subjects = key_of(1)
  local id = redis.pcall('XADD', stream, 'MAXLEN', '~', maxlen, '*',
    'rule', rule, 'key', key, 'count', count, 'limit', limit,
    'window_ms', window, 'time', t, 'host', host,
    'counter', state, 'subjects', subjects,
    'algorithm', algorithm, 'cost', cost_arg, 'shadow', shadow and 1 or 0)
  if type(id) == 'table' then
    redis.call('DEL', crossed)
    error(id)
  end
  redis.call('PUBLISH', channel, cjson.encode({
    type = 'threshold', id = id, rule = rule, key = key,
    count = count, limit = limit, window = window / 1000,
    limit_index = i, algorithm = algorithm, time = t, host = host,
    shadow = shadow,
  }))
  return 1
end

-- The fixed window that counts every attempt, over a limit or with a
-- subject: the counts are made (above); what is over is announced.
if fixed_counts then
  local decided, dcount, crossed, ttl1, hold, ttls = 0, 0, 0, -1, 0, nil
  for i = 1, n do
    local state = key_of(1 + 2 * i)
    local c = fixed_counts[i]
    local limit = limit_of(i)
    if c > limit then
      if decided == 0 then decided, dcount = i, c end
      local ttl = redis.call('PTTL', state)
      if i == 1 then ttl1 = ttl end
      -- Counted, so over until the window ends, whatever comes next.
      if ttl > hold then hold = ttl end
      ttls = ttls or {}
      ttls[i] = ttl
      crossed = crossed + announce(i, c, limit, ttl > 0 and ttl or
        tonumber(ARGV[2 + 3 * i]))
    elseif i == 1 then
      dcount = c
    end
  end
  if subject ~= '' then
    if ttl1 < 0 then ttl1 = redis.call('PTTL', key_of(3)) end
    record_subject(ttl1)
  end
  -- The soonest any window ends, the ones under their limit too (but
  -- one another tool left without a TTL, not mended yet, ends never).
  local count_ms = 0
  if ttls and not shadow then
    count_ms = hold
    for i = 1, n do
      local t = ttls[i] or redis.call('PTTL', key_of(1 + 2 * i))
      if t >= 0 and t < count_ms then count_ms = t end
    end
  end
  return reply(decided > 0, dcount, ttl1, crossed, decided, override, hold,
    count_ms)
end

-- Every other case in two phases: probe() works out what this request
-- would make a limit (count, over, the TTL where known), then commit()
-- writes all limits or none, so a denied request is not half counted.

local limits = {}
for i = 1, n do
  local burst = tonumber(ARGV[3 + 3 * i])
  if factor ~= 1 then burst = math.floor(burst * factor) end
  limits[i] = { limit = limit_of(i), window = tonumber(ARGV[2 + 3 * i]),
    burst = burst, state = key_of(1 + 2 * i) }
end

local fixed, sliding, gcra = {}, {}, {}

function fixed.probe(lim)
  local v = redis.pcall('GET', lim.state)
  if type(v) == 'table' or (v and (not string.match(v, '^%-?%d+$') or
      #v > 18)) then
    if type(v) == 'table' and not corrupt(v) then error(v) end
    wrote = true
    redis.call('DEL', lim.state)
    v = nil
  end
  lim.count = (tonumber(v) or 0) + cost
  lim.over = lim.count > lim.limit
end
function fixed.commit(lim)
  fixed_commit(lim.state, lim.window, lim.limit)
end

-- Sliding-window counter: the previous bucket's count, weighted by how
-- much of it still lies inside the window, plus this bucket's.
function sliding.probe(lim)
  local h = redis.pcall('HMGET', lim.state, 'i', 'c', 'p')
  if h.err then
    if not corrupt(h) then error(h) end
    wrote = true
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
  -- Over while p * (window - e) / window + c + cost > limit: the
  -- previous bucket's weight falls as e grows, so it frees at e_free.
  -- Held no further than this bucket's end.
  if lim.over then
    lim.hold = lim.ttl
    if p > 0 then
      local e_free = lim.window - (lim.limit - c - cost) * lim.window / p
      lim.hold = math.min(lim.ttl, math.ceil(e_free - elapsed) - 1)
    end
  end
end
function sliding.commit(lim)
  wrote = true
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
  lim.pttl = lim.ttl
  -- Over while tat - t + cost * interval > burst * interval, t the time:
  -- until the TAT less what the burst allows beyond this cost.
  if lim.over then
    lim.hold = math.ceil(lim.ttl + (cost - lim.burst) * interval) - 1
  end
end
function gcra.commit(lim)
  wrote = true
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

-- The longest a limit that is over stays so (hold_ms in the contract):
-- a fixed window until it ends (a count of 0 over the limit, with no key,
-- for good); sliding and gcra as their probes worked out.
local function hold_of()
  local hold = 0
  if shadow then return 0 end
  for i = 1, n do
    local lim = limits[i]
    if lim.over then
      local h = lim.hold
      if not h then
        local t = ttl_of(lim)
        h = t > 0 and t or (t == -2 and lim.window or 0)
      end
      if h > hold then hold = h end
    end
  end
  return hold
end

-- The soonest a limit's state moves on (count_ms in the contract): a
-- fixed window's end, a sliding bucket's, a gcra TAT reaching now.
local function count_ms_of()
  local m
  for i = 1, n do
    local lim = limits[i]
    local t = lim.pttl or lim.ttl
    if algorithm == 'fixed' then t = ttl_of(lim) end
    if not m or t < m then m = t end
  end
  return math.max(m, 0)
end

for i = 1, n do alg.probe(limits[i]) end

local over, decided = false, 0
for i = 1, n do
  if limits[i].over and not over then over, decided = true, i end
end
local first = limits[decided > 0 and decided or 1]

if mode == 'peek' then
  return reply(over, first.count - cost, ttl_of(first), 0, decided, override,
    over and hold_of() or 0, 0)
end

if not over or count_denied then
  for i = 1, n do alg.commit(limits[i]) end
elseif algorithm == 'fixed' then
  -- Not counted, but a count over the limit that another tool left
  -- without a TTL is mended all the same: it would answer yes for good.
  wrote = true
  for i = 1, n do
    if limits[i].over then
      redis.call('PEXPIRE', limits[i].state, limits[i].window, 'NX')
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
    local ttl = lim.window
    if algorithm == 'fixed' and ttl_of(lim) > 0 then ttl = lim.ttl end
    crossed = crossed + announce(i, lim.count, lim.limit, ttl)
  end
end

return reply(over, first.count, first.ttl, crossed, decided, override,
  over and hold_of() or 0, over and count_denied and count_ms_of() or 0)

end

-- One decision: its reply, an error raised by Redis or by the code above
-- being the call's.  Several: each in its own pcall, so that one
-- decision's error is its reply alone and the others are answered.
local shadow, count_denied = f_shadow == 49, f_denied == 49
-- The first limit as a number, made once for the call's decisions:
-- tonumber() on a string costs Redis two strtod()s.
local limit1 = tonumber(ARGV[HEAD + 1])
-- Decision d's keys (after KEYS[1], the stream), or its key, from kb =
-- ko + 1 + (d - 1) * kstep (written out: a closure is made per call); a
-- node's call's decisions, their own prefix (with their shard's tag).
local prefix = pb and ARGV[pb]
if m == 1 then
  local kb = ko + 1
  return decide(kb, KEYS[1], HEAD + 3 * n, n, call_factor, f_mode, f_alg,
    shadow, count_denied, limit1, pb, node and prefix .. ARGV[kb - 1] or
    prefix, skip and string.byte(flags, known + 1) == 49)
end
-- The common call, a batch of fixed windows counting every attempt
-- with a shared cost and no subject, named (a single Redis's or a
-- node's), takes each decision here, in the loop, as decide() would: the
-- override's GET (unless k says none), each limit's INCRBY and PEXPIRE
-- NX where fixed_commit() says, the first limit's count.  (In a node's
-- call a GET that found no override has Redis vouch for the slot: the
-- decision's other keys, of its tag, are here.)
-- decide() in a pcall per decision was two fifths of Redis's
-- instructions for such a decision (callgrind): its call, and its
-- arguments and globals looked up again.  Whatever is not that common
-- case goes on to decide(): an override found, or an error (a read or a
-- refused write: nothing was written by it, so decide() does it again,
-- given the counts made before it), or a count over a limit (decide() is
-- given the counts, and does the rest).
local fast_cost = f_alg == 102 and count_denied and f_mode == 99 and
  call_factor == 1 and aa == 0 and pb and limit1 and
  ARGV[HEAD + 3 * n + 2] == '' and ARGV[HEAD + 3 * n + 1]
if fast_cost and fast_cost ~= '1' and not (fast_cost == '0' or
    ((#fast_cost < 7 or fast_cost == '1000000') and
     string.match(fast_cost, '^[1-9]%d*$'))) then
  fast_cost = nil			-- decide() says what is wrong with it
end
-- Limits past the first, each with its mend step, made once a call.
local fast_limits, fast_mends
if fast_cost and n > 1 then
  fast_limits, fast_mends = {}, {}
  for i = 2, n do
    local l = tonumber(ARGV[1 + 3 * i])
    if not l then fast_cost = nil break end	-- decide() answers it
    fast_limits[i] = l
    fast_mends[i] = l >= 2 * MEND and math.floor(l / MEND) or 1
  end
end
local fast_cn = fast_cost == '1' and 1 or fast_cost and tonumber(fast_cost)
local fast_mend = fast_cost and (limit1 >= 2 * MEND and
  math.floor(limit1 / MEND) or 1)
local mid_ov, mid_state = fast_cost and ARGV[pb + 2], fast_cost and
  ARGV[pb + 3]
local fast_ov = fast_cost and not node and prefix .. mid_ov
local fast_state = fast_cost and not node and prefix .. mid_state
local rcall, sbyte, ltype = redis.pcall, string.byte, type
-- A full Redis (OOM) or a replica (READONLY) refuses a call's first
-- write, so where any decision got one, no decision wrote: that is the
-- call's error, as for one decision, which is what tells the shim to
-- move off a demoted master.
local out, refused = {}, nil
for d = 1, m do
  local kb = ko + 1 + (d - 1) * kstep
  local ok, r, none, counted = true, nil,
    skip and sbyte(flags, known + d) == 49, nil
  wrote = false
  if fast_cost then
    -- Each name made only where it is used: a string made costs Redis.
    local key, pre = ARGV[kb], node and prefix .. ARGV[kb - 1]
    if not none then
      if node then
        none = rcall('GET', pre .. mid_ov .. key) == false
      else
        none = rcall('GET', fast_ov .. key) == false
      end
    end
    if none and n == 1 then
      -- The one limit, written out: a loop's bookkeeping was a twentieth
      -- of such a decision.
      local state = node and pre .. mid_state .. key or fast_state .. key
      local c = rcall('INCRBY', state, fast_cost)
      if ltype(c) == 'number' then
        wrote = true
        if c <= fast_cn or c > limit1 or c % fast_mend < fast_cn then
          local e = rcall('PEXPIRE', state, ARGV[5], 'NX')
          if ltype(e) == 'table' then ok, r = false, e end
        end
        if ok and c > limit1 then
          counted = { c }
        elseif ok then
          r = c
        end
      end
    elseif none then
      -- Limit by limit, as decide() does.  A write refused (nothing
      -- written by it) goes on in decide() from that limit, given the
      -- counts made before it; so does a decision over a limit, given
      -- them all; a PEXPIRE's error is the decision's.
      local rest, counts, e = false, {}, nil
      for i = 1, n do
        local state, limit, mend
        if i == 1 then
          state = node and pre .. mid_state .. key or fast_state .. key
          limit, mend = limit1, fast_mend
        else
          state = (pre or prefix) .. ARGV[pb + 1 + 2 * i] .. key
          limit, mend = fast_limits[i], fast_mends[i]
        end
        local c = rcall('INCRBY', state, fast_cost)
        if ltype(c) ~= 'number' then
          rest = true
          break
        end
        wrote = true
        counts[i] = c
        -- PEXPIRE before the next limit, over or not, as decide() does:
        -- a failing one leaves the later limits uncounted.
        if c > limit then rest = true end
        if c <= fast_cn or c > limit or c % mend < fast_cn then
          e = rcall('PEXPIRE', state, ARGV[2 + 3 * i], 'NX')
          if ltype(e) == 'table' then break end
          e = nil
        end
      end
      if e then
        ok, r = false, e
      elseif rest then
        counted = counts
      else
        r = counts[1]
      end
    end
  end
  if r == nil then
    ok, r = pcall(decide, kb, KEYS[1], HEAD + 3 * n + aa * (d - 1), n,
      call_factor, f_mode, f_alg, shadow, count_denied, limit1, pb,
      node and prefix .. ARGV[kb - 1] or prefix, none, counted)
  end
  if ok then
    out[d] = r
  else
    if type(r) == 'table' and r.err then
      r = r.err
    else
      -- A Lua error, or an error string: a reply the shim reads as
      -- Redis's (OOM, READONLY...) keeps its first word.
      r = tostring(r)
      if not string.match(r, '^%u+ ') then r = 'ERR ' .. r end
    end
    if string.sub(r, 1, 4) == 'OOM ' or string.sub(r, 1, 9) == 'READONLY ' then
      refused = refused or r
    elseif node and not wrote and
        (string.find(r, 'attempted to', 1, true) or
         string.find(r, 'during rehashing', 1, true)) then
      -- Redis refused a key of the decision here before it wrote (a slot
      -- this node does not serve, one moving, the cluster down; Redis
      -- 7.0 says "Script attempted to ...", 7.2 also "... in script
      -- attempted to ..." and "... during rehashing of the slot"): the
      -- shim sends it again with its keys declared, and Redis's own
      -- routing answers.
      r = 'ELSEWHERE count.lua: not decided on this node: ' .. r
    end
    out[d] = { err = r }
  end
end
if refused then return { err = refused } end
return out
