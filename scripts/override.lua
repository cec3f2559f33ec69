--[[
senderwatch override.lua: set, change or clear a runtime override of one
key under one rule, and announce it on the events channel so every admin
watching (and the alerters' logs) sees who changed what.

  # allow alice for 24 hours
  redis-cli --eval scripts/override.lua \
      senderwatch:override:default:alice@example.org , \
      allow 86400 senderwatch:events default alice@example.org "ticket 42"
  # block bob until cleared; double carol's limits for a week; clear
  ... , block 0 ...          ... , x2 604800 ...          ... , clear 0 ...

KEYS[1]  PREFIX:override:RULE:KEY (the key escaped as in every key name)
ARGV[1]  action: allow | block | xFACTOR | clear
ARGV[2]  lifetime in seconds; 0 = until cleared
ARGV[3]  events channel
ARGV[4]  rule name, ARGV[5] key (for the announcement)
ARGV[6]  a note: who and why

Reply: "OK", or an error for an unknown action or a wrong number of
keys or arguments.
A plain `SET KEY allow EX 86400` works as well; it is just not announced.
]]

if #KEYS ~= 1 or #ARGV < 5 or #ARGV > 6 then
  return redis.error_reply('ERR override.lua: 1 key and action, lifetime, '
    .. 'channel, rule, key [, note]')
end
local okey = KEYS[1]
local action, ttl = ARGV[1], tonumber(ARGV[2])
local channel, rule, key, note = ARGV[3], ARGV[4], ARGV[5], ARGV[6] or ''

if action == 'clear' then
  redis.call('DEL', okey)
elseif action == 'allow' or action == 'block' or
    (string.sub(action, 1, 1) == 'x' and tonumber(string.sub(action, 2))
     and tonumber(string.sub(action, 2)) > 0) then
  if ttl and ttl > 0 then
    redis.call('SET', okey, action, 'EX', ttl)
  else
    redis.call('SET', okey, action)
  end
else
  return redis.error_reply('action must be allow, block, xFACTOR or clear')
end

local t = redis.call('TIME')
redis.call('PUBLISH', channel, cjson.encode({
  type = 'override', rule = rule, key = key, action = action,
  ttl = ttl or 0, note = note, time = tonumber(t[1]),
}))
return redis.status_reply('OK')
