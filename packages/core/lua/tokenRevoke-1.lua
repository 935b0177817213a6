--[[
  Revoke a gateway token: every later admit, in every process, refuses it. Its settings and
  counters stay for the record; reservations in flight still settle.

  KEYS[1] tok:st
  ARGV[1] token id
  Reply: {1, revokedAtMs} (now, or when it was revoked before) or {0} (no such token)
]]
--- @include "common"

local stKey, id = KEYS[1], ARGV[1]
local st = loadState(stKey, id)
if not st then return { 0 } end
if st.rv == 0 then
  st.rv = nowMs()
  saveState(stKey, id, st)
end
return { 1, math.floor(st.rv) }
