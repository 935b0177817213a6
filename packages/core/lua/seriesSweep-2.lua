--[[
  Drop the traffic counters' per-key fields (`k<bucket>:<keyId>`, see includes/series.lua) of keys
  no longer in the pool: a removed or rotated key's 96 fields would otherwise stay for good. The
  caller passes a page of field names it read with HSCAN (at most a few hundred).

  KEYS[1] cfg  KEYS[2] ser
  ARGV: field names of ser
  Reply: fields deleted
]]
--- @include "common"

local cfgKey, serKey = KEYS[1], KEYS[2]
local known, dropped = {}, 0
for i = 1, #ARGV do
  local field = ARGV[i]
  local id = string.match(field, '^k%d+:(.+)$')
  if id then
    local present = known[id]
    if present == nil then
      present = redis.call('HEXISTS', cfgKey, id) == 1
      known[id] = present
    end
    if not present then dropped = dropped + redis.call('HDEL', serKey, field) end
  end
end
return dropped
