--[[
  The pool-wide part of status (the keys come in pages: statusPage-3.lua). O(log leases + spend
  lines), whatever the number of keys.

  KEYS[1] leases  KEYS[2] meta  KEYS[3] spend
  ARGV: none
  Reply: JSON {now, version, leases, spend: [field, value, ...]}: Redis time (ms), the
  topology version, leases in flight (deadline not passed), the spend hash
]]
--- @include "common"

local leasesKey, metaKey, spendKey = KEYS[1], KEYS[2], KEYS[3]
local now = nowMs()
return cjson.encode({
  now = now,
  version = tonumber(redis.call('HGET', metaKey, 'v') or '0'),
  leases = redis.call('ZCOUNT', leasesKey, '(' .. tostring(math.floor(now)), '+inf'),
  spend = redis.call('HGETALL', spendKey),
})
