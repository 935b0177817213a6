--[[
  A request left for the provider later than it was admitted (its process stalled in between): on
  a windowed key its request entry moves to when it was sent, at once (window.lua windowSent), so
  the admissions of the next window wait for it. Lease.sent() calls it, in the background, only for
  a request sent more than half of limits.windowMarginMs after its admission; release moves the
  entry too if this call was lost.

  KEYS[1] win  ARGV[1] lease  ARGV[2] when it was sent, Redis ms
  Reply: 1 moved, 0 nothing moved (not windowed, not late, released, trimmed or moved already)
]]
--- @include "common"

local _, id, _, _, startMs, slot = parseLease(ARGV[1])
if not startMs then return 0 end
return windowSent(KEYS[1], nil, id, startMs, slot, tonumber(ARGV[2]), nowMs()) and 1 or 0
