--[[
  The pool-wide part of status (the keys come in pages: statusPage-4.lua). O(log leases + spend
  lines), whatever the number of keys.

  KEYS[1] cfg  KEYS[2] leases  KEYS[3] meta  KEYS[4] spend
  ARGV: none
  Reply: JSON {now, version, leases, keys, spend: [field, value, ...]}: Redis time (ms), the
  topology version, leases in flight (deadline not passed), the number of keys, the spend hash
]]
--- @include "common"

local cfgKey, leasesKey, metaKey, spendKey = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local now = nowMs()
return cjson.encode({
  now = now,
  version = tonumber(redis.call('HGET', metaKey, 'v') or '0'),
  leases = redis.call('ZCOUNT', leasesKey, '(' .. tostring(math.floor(now)), '+inf'),
  keys = redis.call('HLEN', cfgKey),
  spend = redis.call('HGETALL', spendKey),
})
