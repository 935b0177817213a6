--[[
  Settle one admitted gateway request: drop its reservation, charge the real cost to the current
  budget period, count the request and when it was made; or give the request back to the bucket
  (the gateway answered 429 without calling a provider). For a request settled without a lease
  (a lease's release settles in release-11.lua instead, in the same call).

  KEYS[1] tok:st  KEYS[2] tok:res
  ARGV[1] token id  ARGV[2] reservation ('' = none held in Redis: admitted by a process while
  Redis was down; only the cost and the request are recorded)  ARGV[3] real cost, nano-dollars
  ARGV[4] '1' = give the request back (not counted), else '0'
  Reply: {1} or {0, 'unknown_token'} or {0, 'unknown_reservation'} (settled before: nothing is
  done, so nothing is counted twice). A reservation the reaper charged (its request outlived
  reservationTimeoutMs) settles once more from its tombstone: the estimate the reaper charged is
  replaced by the real cost and the request is counted.
]]
--- @include "common"
--- @include "tokens"

local why = tokenSettle(KEYS[1], KEYS[2], ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4] == '1', nowMs(), true)
if type(why) == 'table' then return why end -- an error reply
if why == '' then return { 1 } end
return { 0, why }
