--[[
  Settle one admitted gateway request: drop its reservation, charge the real cost to the current
  budget period, count the request and when it was made; or give the request back to the bucket
  (the gateway answered 429 without calling a provider).

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

local stKey, resKey = KEYS[1], KEYS[2]
local id, reservation, cost = ARGV[1], ARGV[2], tonumber(ARGV[3])
local st = loadState(stKey, id)
if not st then return { 0, 'unknown_token' } end
local now = nowMs()

local held = 0
if reservation ~= '' then
  local rid, rcost = parseReservation(reservation)
  if rid ~= id then return redis.error_reply('ERR keypool: reservation of another token') end
  -- before the reaper: a reservation past its expiry but still there settles normally
  if redis.call('ZREM', resKey, reservation) == 0 then
    reapReservations(resKey, stKey, now, 8)
    if redis.call('ZREM', resKey, 'reaped:' .. reservation) == 0 then return { 0, 'unknown_reservation' } end
    -- reaped while its request ran: the reaper spent the estimate and freed the reservation
    st = loadState(stKey, id)
    rollBudget(st, now)
    st.sp = math.max(0, st.sp - rcost)
  else
    held = rcost
    rollBudget(st, now)
  end
else
  rollBudget(st, now)
end

st.rs = math.max(0, st.rs - held)
st.sp = st.sp + cost
st.lu = now
if ARGV[4] == '1' then
  -- only a reservation made in Redis took a request from the shared bucket
  if reservation ~= '' and st.rpm > 0 then
    refill(st, now)
    st.rt = math.min(st.rb, st.rt + 1)
  end
else
  st.n = st.n + 1
end
saveState(stKey, id, st)
reapReservations(resKey, stKey, now, 8)
return { 1 }
