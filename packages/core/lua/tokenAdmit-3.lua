--[[
  Admit one gateway request for a token, atomically: look the token up by its hash, refuse it when
  revoked or when it may not ask for the model, then take one request from its bucket and reserve
  the estimated cost against its budget, or neither. A refusal changes nothing.

  KEYS[1] tok (sha256 -> settings JSON)  KEYS[2] tok:st (id -> msgpack state)  KEYS[3] tok:res
  (zset reservation -> expiry)
  ARGV[1] sha256 hex of the token  ARGV[2] model (or route) asked for  ARGV[3] estimated cost,
  nano-dollars  ARGV[4] reservation lifetime ms  ARGV[5] recheck ms (budget held by reservations)
  ARGV[6] '1': send the settings JSON back (the caller has not cached them), else '0'
  Reply: {1, id, reservation, settingsJSON | '', spentNanos, reservedNanos, periodEndMs (-1 never)}
      or {0, reason, retryAfterMs (-1: not by waiting), id ('' when unknown)}
  reason: unknown | revoked | model_not_allowed | rate_limited | budget_exhausted | over_budget
  (over_budget: the estimate alone exceeds the whole budget; retryAfterMs -1)
]]
--- @include "common"
--- @include "tokens"

local tokKey, stKey, resKey = KEYS[1], KEYS[2], KEYS[3]
local estCost = tonumber(ARGV[3])
local now = nowMs()

-- reap first: an expired reservation of this very token frees (and charges) its money
reapReservations(resKey, stKey, now, 8)

local raw = redis.call('HGET', tokKey, ARGV[1])
if not raw then return { 0, 'unknown', -1, '' } end
local cfg = cjson.decode(raw)
local id = cfg.id
local st = loadState(stKey, id)
if not st then return { 0, 'unknown', -1, '' } end
if st.rv > 0 then return { 0, 'revoked', -1, id } end

local models = cfg.models
if type(models) == 'table' and #models > 0 then
  local allowed = false
  for i = 1, #models do
    if models[i] == ARGV[2] then allowed = true break end
  end
  if not allowed then return { 0, 'model_not_allowed', -1, id } end
end

-- Budget before rate: a token out of money for the month should not be told "in a second".
-- The rule of key budgets (acquire): spent + live reservations + this estimate must fit, so spend
-- passes the budget only by what real costs exceed their estimates.
local pend = rollBudget(st, now)
if st.bud >= 0 and estCost > st.bud then return { 0, 'over_budget', -1, id } end
if st.bud >= 0 and st.sp + st.rs + estCost > st.bud then
  if st.rs > 0 and st.sp + estCost <= st.bud then
    -- the money is held by requests in flight; their settle may give it back
    return { 0, 'budget_exhausted', tonumber(ARGV[5]), id }
  end
  return { 0, 'budget_exhausted', pend < 0 and -1 or math.max(0, math.ceil(pend - now)), id }
end

refill(st, now)
if st.rpm > 0 then
  if st.rt < 1 then return { 0, 'rate_limited', math.max(1, math.ceil((1 - st.rt) * 60000 / st.rpm)), id } end
  st.rt = st.rt - 1
end

st.seq = st.seq + 1
local reservation = id .. ':' .. st.seq .. ':' .. ARGV[3]
st.rs = st.rs + estCost
saveState(stKey, id, st)
redis.call('ZADD', resKey, math.ceil(now + tonumber(ARGV[4])), reservation)
return { 1, id, reservation, ARGV[6] == '1' and raw or '', st.sp, st.rs, pend }
