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
