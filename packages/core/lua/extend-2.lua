--[[
  Push a lease's deadline out (a long stream is still running): the reaper leaves it alone.

  KEYS[1] leases  KEYS[2] st
  ARGV[1] lease  ARGV[2] ms from now
  Reply: {1, deadlineMs} or {0} (the lease expired or was released)
]]
--- @include "common"

local leasesKey, stKey = KEYS[1], KEYS[2]
local lease = ARGV[1]
if not redis.call('ZSCORE', leasesKey, lease) then return { 0 } end
local deadline = math.ceil(nowMs() + tonumber(ARGV[2]))
redis.call('ZADD', leasesKey, 'XX', deadline, lease)
-- a half-open probe's deadline is also how long the rest of the fleet waits for it
local _, id = parseLease(lease)
local st = id and loadState(stKey, id)
if st and st.bp == lease then
  st.bd = deadline
  saveState(stKey, id, st)
end
return { 1, deadline }
