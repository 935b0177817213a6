--[[
  Housekeeping, part 1: gives back the slots of up to ARGV[2] expired leases (acquire reaps only a
  few per call, so a pool without traffic would keep them), charging their estimate once as
  acquire's reaper does. The caller calls again while `more` is 1, so no call grows with the
  number of leases.

  KEYS (4 + 2 per group, so the caller passes numkeys and the file name has no count):
  KEYS[1] cfg  KEYS[2] st  KEYS[3] leases  KEYS[4] meta; then two per key group: avail set, wait zset
  ARGV[1] the groups of those pairs, comma-separated, in order  ARGV[2] most leases to reap
  Reply: {leasesReaped, more (1: expired leases are left)}
]]
--- @include "common"

local cfgKey, stKey, leasesKey, metaKey = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local groups = groupIndexes(ARGV[1])
local limit = tonumber(ARGV[2])
local nowStr = tostring(math.floor(nowMs()))

-- same rules as acquire's reaper
local reaped = 0
local expired = redis.call('ZRANGEBYSCORE', leasesKey, '-inf', nowStr, 'LIMIT', 0, limit)
for _, lease in ipairs(expired) do
  local removed = reapLease(cfgKey, stKey, leasesKey, metaKey, lease)
  local gidx = removed and groups[removed.g]
  if gidx then
    redis.call('SREM', KEYS[3 + 2 * gidx], removed.id)
    redis.call('ZREM', KEYS[4 + 2 * gidx], removed.id)
  end
  reaped = reaped + 1
end
local more = 0
if reaped == limit and #redis.call('ZRANGEBYSCORE', leasesKey, '-inf', nowStr, 'LIMIT', 0, 1) > 0 then more = 1 end
return { reaped, more }
