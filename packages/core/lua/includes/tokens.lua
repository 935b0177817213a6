--[[
  Gateway tokens (virtual keys): shared pieces of the token scripts. Needs "common" included first
  (nowMs, loadState, saveState, refill, rollBudget).

  A token is known by sha256(token) hex only; Redis never holds one in clear.
    tok     hash  sha256 hex -> settings JSON {id, hint, name, rpm, rb, bud, per, models, budget?}
            (written once at create; models is what the admit script checks with cjson)
    tok:id  hash  token id (first 12 hex of the sha256) -> sha256 hex, for the admin operations
    tok:st  hash  token id -> msgpack state: the limits the scripts enforce (copied from the
            settings) and the live counters, in the same fields the key state uses so that the
            key helpers apply unchanged:
              rpm, rb, rt, ts      request bucket: rate, size, level, last refill (tpm = tb = 0)
              bud, per, pid, sp, rs budget (nano-dollars, -1 none), period, period id, spent, reserved
              seq                   reservations made so far (numbers the next one)
              n, lu, ca, rv         requests settled, last used, created, revoked at (ms, 0 = never)
    tok:res zset  reservation -> expiry (ms). A reservation says what it holds,
            "<tokenId>:<seq>:<nano-dollars>", so settle and the reaper need no lookup. A reservation
            the reaper charged leaves "reaped:<reservation>" for a day, so that the request it was for,
            when it ends after all (a stream longer than reservationTimeoutMs), is still settled at its
            real cost, once.
]]

-- how long the tombstone of a reaped reservation waits for its late settle (ms)
local REAPED_KEEP_MS = 86400000

-- "<tokenId>:<seq>:<nano-dollars>" -> tokenId, cost
local function parseReservation(member)
  local id, _, cost = string.match(member, '^(%x+):(%d+):(%d+)$')
  return id, tonumber(cost)
end

local function newTokenState(cfg, now)
  return {
    rpm = cfg.rpm, rb = cfg.rb, tpm = 0, tb = 0, rt = cfg.rb, ts = now,
    bud = cfg.bud, per = cfg.per, pid = -1, sp = 0, rs = 0,
    seq = 0, n = 0, lu = 0, ca = now, rv = 0,
  }
end

-- Charge reservations whose holder never settled them (process killed, or a settle dropped while
-- Redis was down): the estimate leaves the reservations and is spent, once, in the current period.
local function reapReservations(resKey, stKey, now, limit)
  local expired = redis.call('ZRANGEBYSCORE', resKey, '-inf', tostring(math.floor(now)), 'LIMIT', '0', tostring(limit))
  for _, member in ipairs(expired) do
    local id, cost = parseReservation(member)
    local st = id and loadState(stKey, id)
    if st then
      rollBudget(st, now)
      st.rs = math.max(0, st.rs - cost)
      st.sp = st.sp + cost
      saveState(stKey, id, st)
      redis.call('ZADD', resKey, math.floor(now + REAPED_KEEP_MS), 'reaped:' .. member)
    end
    -- a tombstone whose day is over (no late settle came) just goes
    redis.call('ZREM', resKey, member)
  end
end

--[[
  Check one gateway request of a token without changing anything: known, not revoked, allowed the
  model, its budget and its bucket have room. Expired reservations are reaped first (an expired one
  of this very token frees its money). Returns nil and the refusal {0, reason, retryAfterMs, id}
  (`recheckMs`: the wait when the budget is held by requests in flight), or the admission to take:
  {raw (settings JSON), id, st (refilled), pend (budget period end, -1 never)}.
]]
local function tokenCheck(tokKey, stKey, resKey, hash, model, estCost, recheckMs, now)
  reapReservations(resKey, stKey, now, 8)
  local raw = redis.call('HGET', tokKey, hash)
  if not raw then return nil, { 0, 'unknown', -1, '' } end
  local cfg = cjson.decode(raw)
  local id = cfg.id
  local st = loadState(stKey, id)
  if not st then return nil, { 0, 'unknown', -1, '' } end
  if st.rv > 0 then return nil, { 0, 'revoked', -1, id } end
  local models = cfg.models
  if type(models) == 'table' and #models > 0 then
    local allowed = false
    for i = 1, #models do
      if models[i] == model then allowed = true break end
    end
    if not allowed then return nil, { 0, 'model_not_allowed', -1, id } end
  end
  -- Budget before rate: a token out of money for the month should not be told "in a second".
  -- The rule of key budgets (acquire): spent + live reservations + this estimate must fit, so spend
  -- passes the budget only by what real costs exceed their estimates.
  local pend = rollBudget(st, now)
  if st.bud >= 0 and estCost > st.bud then return nil, { 0, 'over_budget', -1, id } end
  if st.bud >= 0 and st.sp + st.rs + estCost > st.bud then
    if st.rs > 0 and st.sp + estCost <= st.bud then
      -- the money is held by requests in flight; their settle may give it back
      return nil, { 0, 'budget_exhausted', recheckMs, id }
    end
    return nil, { 0, 'budget_exhausted', pend < 0 and -1 or math.max(0, math.ceil(pend - now)), id }
  end
  refill(st, now)
  if st.rpm > 0 and st.rt < 1 then
    return nil, { 0, 'rate_limited', math.max(1, math.ceil((1 - st.rt) * 60000 / st.rpm)), id }
  end
  return { raw = raw, id = id, st = st, pend = pend }
end

-- Take an admission tokenCheck allowed: one request from the bucket, the estimate (`estStr`, the
-- caller's integer string) reserved until `expiry` (ms). Returns the reservation.
local function tokenTake(stKey, resKey, a, estCost, estStr, expiry)
  local st = a.st
  if st.rpm > 0 then st.rt = st.rt - 1 end
  st.seq = st.seq + 1
  local reservation = a.id .. ':' .. st.seq .. ':' .. estStr
  st.rs = st.rs + estCost
  saveState(stKey, a.id, st)
  redis.call('ZADD', resKey, math.ceil(expiry), reservation)
  return reservation
end

--[[
  Settle one admitted request: drop its reservation, charge `cost` (nano-dollars) to the current
  budget period, count the request; or, `refund`, give the request back to the bucket (not
  counted). reservation '' = none held in Redis (admitted by a process while Redis was down: only
  the cost and the request are recorded). Returns '' (settled), 'unknown_token' or
  'unknown_reservation' (settled before: nothing is done, so nothing is counted twice). A
  reservation the reaper charged (its request outlived reservationTimeoutMs) settles once more
  from its tombstone: the estimate the reaper charged is replaced by the real cost. `reapAfter`:
  reap a few expired reservations too (a release leaves that to the next acquire, which reaps first).
]]
local function tokenSettle(stKey, resKey, id, reservation, cost, refund, now, reapAfter)
  local st = loadState(stKey, id)
  if not st then return 'unknown_token' end
  local held = 0
  if reservation ~= '' then
    local rid, rcost = parseReservation(reservation)
    if rid ~= id then return redis.error_reply('ERR keypool: reservation of another token') end
    -- before the reaper: a reservation past its expiry but still there settles normally
    if redis.call('ZREM', resKey, reservation) == 0 then
      reapReservations(resKey, stKey, now, 8)
      if redis.call('ZREM', resKey, 'reaped:' .. reservation) == 0 then return 'unknown_reservation' end
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
  if refund then
    -- only a reservation made in Redis took a request from the shared bucket
    if reservation ~= '' and st.rpm > 0 then
      refill(st, now)
      st.rt = math.min(st.rb, st.rt + 1)
    end
  else
    st.n = st.n + 1
  end
  saveState(stKey, id, st)
  if reapAfter then reapReservations(resKey, stKey, now, 8) end
  return ''
end

-- What operators see of one token, computed with the rules admit uses (refill, budget period).
-- Nano-dollar sums go out as integer strings: cjson keeps only 14 significant digits.
local function tokenView(raw, st, now)
  refill(st, now)
  local pend = rollBudget(st, now)
  return {
    cfg = raw,
    rt = st.rt, n = st.n,
    sp = string.format('%.0f', st.sp), rs = string.format('%.0f', st.rs),
    ca = math.floor(st.ca), lu = math.floor(st.lu), rv = math.floor(st.rv),
    pend = pend,
  }
end
