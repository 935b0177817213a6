--[[
  Shared pieces of every keypool script. Inlined by the script loader where a script says
  `--- @include "common"`.

  Per-key state lives in pool-wide hashes (field = key id) so that every Redis key a script touches
  is one of the pool's fixed keys, passed in KEYS: cfg (JSON settings for people and tools, written
  by clients, read only by upsert and status) and st (msgpack: the limits the scripts enforce,
  copied from cfg at upsert, plus the live state). One HGET and one unpack per candidate is the
  whole read cost of a key on the hot path. Times are milliseconds with a microsecond fraction,
  read from redis TIME, never from a client; msgpack keeps doubles exact (cjson would round).

  A lease is one member of the leases zset, scored by its deadline. The member carries what the
  lease took, "<seq>:<keyId>:<tokens>:<nano-dollars>", so release and the reaper need no lookup.
  A key's state remembers the lease sequence at its creation (cs): a lease of an earlier key with
  the same id (removed, then added again) never touches the new one's counters.
]]

-- Wait-set score of a key blocked until someone acts (disabled, revoked, draining, total budget):
-- it never comes due, but it keeps the reason visible to acquire ("why is nothing usable?").
local PARKED = 9e15

-- Reasons acquire reports; admin states read as 'unavailable'.
local REPORTED = { rate_limited = true, concurrency = true, cooling = true, circuit_open = true, budget = true }

local function nowMs()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
end

-- The housekeeping scripts' groups: ARGV's comma-separated list -> group -> its position (1-based),
-- which says where its pair of KEYS (candidate set, wait zset) is.
local function groupIndexes(csv)
  local groups, n = {}, 0
  for g in string.gmatch(csv, '[^,]+') do
    n = n + 1
    groups[g] = n
  end
  return groups
end

-- For the scripts that work through a list in pages (statusPage, housekeepKeys): true once
-- `budgetUs` microseconds have gone since `startMs` (nowMs), so that a call stops early, whatever
-- each item costs, and the caller goes on with the rest in the next call.
local function overBudget(startMs, budgetUs)
  return (nowMs() - startMs) * 1000 >= budgetUs
end

-- The limits the scripts enforce, from a key's settings (cfg JSON). The effective limits (erpm,
-- etpm: what acquire enforces, see release's learning) follow the configured ones while they equal
-- them; a lower learnt one stays, capped by the new configured limit.
local function applyLimits(st, cfg)
  local oldRpm, oldTpm = st.rpm, st.tpm
  st.rpm, st.tpm, st.rb, st.tb, st.mc = cfg.rpm, cfg.tpm, cfg.rb, cfg.tb, cfg.mc
  st.bud, st.per, st.w, st.g, st.tc = cfg.bud, cfg.per, cfg.w, cfg.g, cfg.tc or 'usage'
  st.rw, st.tw, st.lh = cfg.rw or 0, cfg.tw or 0, cfg.lh or 'minute'
  if st.erpm == nil or st.erpm == oldRpm or (st.rpm > 0 and st.erpm > st.rpm) then st.erpm = st.rpm end
  if st.etpm == nil or st.etpm == oldTpm or (st.tpm > 0 and st.etpm > st.tpm) then st.etpm = st.tpm end
end

-- Fresh state for a key that has never been used: full buckets, breaker closed.
local function newState(cfg, now, seq)
  local st = {
    cs = seq or 0,                    -- lease sequence when the key was created
    rt = cfg.rb, tt = cfg.tb, ts = now, -- request and token buckets, last refill
    inf = 0,                          -- leases in flight
    adm = 'active',                   -- active | disabled | draining | revoked
    ret = 0,                          -- retire (remove) when drained
    cu = 0,                           -- cooling until (429)
    br = 'closed', bf = 0, bo = 0, bu = 0, bc = 0, -- breaker: state, consecutive failures, opens, open until, closed at
    bp = '', bd = 0,                  -- half-open probe lease and its deadline
    sp = 0, rs = 0, pid = -1,         -- spend and reservations (nano-dollars), budget period id
    hs = 1, p50 = 0, p99 = 0, er = 0, deg = 0, -- health summary written by release
    wr = '',                          -- why the key sits in a wait set
    wc = 0, wl = 0,                   -- enforcement windows: tokens so far, latest start (window.lua)
    rl = -1, tl = -1, ld = 0, li = 0, -- reported limits (per minute), last lowered / raised (learn.lua)
  }
  applyLimits(st, cfg)
  return st
end

-- A state as HGET / HMGET read it (false or nil: none).
local function stateOf(raw)
  if not raw then return nil end
  local st = cmsgpack.unpack(raw)
  if st.erpm == nil and st.adm ~= nil then
    -- a key's state written by a version without windows or learning (token states have neither)
    st.erpm, st.etpm, st.rw, st.tw, st.lh = st.rpm, st.tpm, 0, 0, 'minute'
    st.wc, st.wl, st.rl, st.tl, st.ld, st.li = 0, 0, -1, -1, 0, 0
  end
  return st
end

--[[
  Decoded states, kept between calls: a state a script saved is kept decoded, with the bytes it
  saved, so that the next script that reads those same bytes takes the table instead of decoding
  them again (an unpack of a key's 56 fields costs about 5 us; three per lease). Only the Redis
  Functions library keeps it: its top level runs once, at FUNCTION LOAD, and every call shares its
  tables; under EVAL each call starts empty (no gain, nothing changes).

  Rules that keep a kept table equal to its bytes:
  - it is compared by its bytes: anything that wrote the state otherwise (another script version,
    HSET by hand, a replica promoted) makes different bytes, and the bytes are decoded again;
  - a table handed out is no longer kept (the script may change it and not save it), unless the
    script puts back what it changed and keeps it again with the bytes it read (keepState: acquire,
    for the candidates it judged and did not choose; the fields evaluate may change are listed
    there);
  - a script does not change a state after saving it with saveState (saveChanging, for a table it
    keeps changing and may not save again, keeps nothing); KEYPOOL_VERIFY_STATE_CACHE=1 (tests)
    compares every table handed out with a fresh decode and fails the call on a difference.
  Two generations of at most KEPT_MAX tables each (about 3 kB of Lua memory a table) are kept:
  when the newer one is full it becomes the older one and the older one is dropped, so a state
  saved by an acquire is still there for its release after up to KEPT_MAX other saves (a 1,000-key
  pool with 64 callers in flight saves about 64 states between the two; dropping every table at
  once, as the first form did, lost about half of them). More kept made things slower: with 4,096
  kept, an acquire on a 1,000-key pool took 65 us against 57 without any (measured side by side on
  one Redis; probably Lua's collector walking the kept tables).
]]
local VERIFY_STATE_CACHE = false
local KEPT_MAX = 64
-- kept[stKey][id] = { bytes, table }: the newer generation (keptN: its tables, a pool's own
-- table of them included), then the older one
local kept, keptN, older = {}, 0, {}

local function sameValue(a, b)
  if type(a) ~= 'table' or type(b) ~= 'table' then return a == b end
  for k, v in pairs(a) do
    if not sameValue(v, b[k]) then return false end
  end
  for k in pairs(b) do
    if a[k] == nil then return false end
  end
  return true
end

-- Stop keeping the state of `id` in `stKey`: what was kept ({bytes, table}), or nil.
local function unkeep(stKey, id)
  local byKey = kept[stKey]
  local k = byKey and byKey[id]
  if k then
    byKey[id] = nil
    keptN = keptN - 1
    return k
  end
  byKey = older[stKey]
  k = byKey and byKey[id]
  if k then byKey[id] = nil end
  return k
end

-- The state of `id` in hash `stKey` from its bytes `raw` (HGET / HMGET's reply): the table kept for
-- those bytes, else decoded; and true when it was kept.
local function stateFrom(stKey, id, raw)
  local k = unkeep(stKey, id)
  if k then
    if k[1] == raw then
      if VERIFY_STATE_CACHE and not sameValue(k[2], stateOf(raw)) then
        error('keypool: the kept state of ' .. id .. ' in ' .. stKey .. ' differs from its bytes (changed after saveState)')
      end
      return k[2], true
    end
  end
  return stateOf(raw), false
end

local function loadState(stKey, id)
  return stateFrom(stKey, id, redis.call('HGET', stKey, id))
end

-- Save a state the script may still change (and not save again): nothing is kept.
local function saveChanging(stKey, id, st)
  unkeep(stKey, id)
  redis.call('HSET', stKey, id, cmsgpack.pack(st))
end

-- Keep `st` as the decoded table of the bytes `raw` the hash holds for `id` (see above): from
-- saveState, or for a table handed out that the script gave back as it was decoded (acquire's
-- candidates that were not chosen).
local function keepState(stKey, id, raw, st)
  local byKey = kept[stKey]
  if byKey and byKey[id] then
    byKey[id] = { raw, st }
    return
  end
  local old = older[stKey]
  if old then old[id] = nil end
  if keptN >= KEPT_MAX then
    older, kept, keptN = kept, {}, 0
    byKey = nil
  end
  if not byKey then
    -- counted too, so a generation that never fills with states still turns over and lets go of
    -- the tables of pools no longer used
    byKey = {}
    kept[stKey] = byKey
    keptN = keptN + 1
  end
  keptN = keptN + 1
  byKey[id] = { raw, st }
end

-- Save a state; the script does not change it afterwards (see above): kept for the next reader.
local function saveState(stKey, id, st)
  local raw = cmsgpack.pack(st)
  redis.call('HSET', stKey, id, raw)
  keepState(stKey, id, raw, st)
end

-- "<seq>:<keyId>:<tokens>:<nano-dollars>:<start, us>:<window slot>" -> seq, keyId, tokens, cost,
-- start ms, slot (a lease written before windows has neither: nil)
local function parseLease(member)
  local seq, id, t, c, rest = string.match(member, '^(%d+):([^:]+):(%d+):(%d+)(.*)$')
  local start, slot = nil, nil
  if rest and rest ~= '' then
    local us, sl = string.match(rest, '^:(%d+):(%d+)$')
    if not us then return nil end
    start, slot = tonumber(us) / 1000, sl
  end
  return tonumber(seq), id, tonumber(t), tonumber(c), start, slot
end

-- Give back what an expired lease took (its holder never released it: process killed). Usage is
-- unknown, so its estimated cost stays spent, charged once; a half-open probe it held is freed; a
-- retired key whose last lease this was is removed (returns its state and group so the caller can
-- drop it from the group's sets, or nil). Always removes the lease.
local function reapLease(cfgKey, stKey, leasesKey, metaKey, lease)
  local seq, id, _, cost = parseLease(lease)
  local st = id and loadState(stKey, id)
  local removed
  if st and seq > st.cs then
    st.inf = math.max(0, st.inf - 1)
    st.rs = math.max(0, st.rs - cost)
    st.sp = st.sp + cost
    if st.bp == lease then st.bp, st.bd = '', 0 end
    if st.adm == 'draining' and st.ret == 1 and st.inf == 0 then
      redis.call('HDEL', cfgKey, id)
      redis.call('HDEL', stKey, id)
      redis.call('HINCRBY', metaKey, 'v', 1)
      removed = { id = id, g = st.g }
    else
      saveState(stKey, id, st)
    end
  end
  redis.call('ZREM', leasesKey, lease)
  return removed
end

-- Put a key where its state says, after a release or a probe: parked (an admin state: disabled,
-- draining, revoked), waiting for its breaker or its cooling to end, or, when `wake`, back among
-- the candidates at once. Otherwise it stays where it is.
local function placeKey(st, id, availKey, waitKey, cooling, wake)
  if st.adm ~= 'active' then
    redis.call('SREM', availKey, id)
    redis.call('ZADD', waitKey, PARKED, id)
    st.wr = st.adm
  elseif st.br == 'open' then
    redis.call('SREM', availKey, id)
    redis.call('ZADD', waitKey, math.ceil(st.bu), id)
    st.wr = 'circuit_open'
  elseif cooling then
    redis.call('SREM', availKey, id)
    redis.call('ZADD', waitKey, math.ceil(st.cu), id)
    st.wr = 'cooling'
  elseif wake then
    redis.call('ZREM', waitKey, id)
    redis.call('SADD', availKey, id)
    st.wr = ''
  end
end

-- Bucket sizes: the configured bursts, or for a limit learnt on a key configured without one, 2 s
-- of requests and 10 s of tokens.
local function reqCap(st)
  if st.rb > 0 then return st.rb end
  return math.max(1, math.ceil((st.erpm or st.rpm) / 30))
end

local function tokCap(st)
  if st.tb > 0 then return st.tb end
  return math.max(1, math.ceil((st.etpm or st.tpm) / 6))
end

-- Refill the token buckets up to `now` at the effective rates (lazy token-bucket refill; a bucket
-- may be negative after usage that exceeded its estimate, or after a reservation: the debt is paid
-- before the next admission).
local function refill(st, now)
  local dt = now - st.ts
  if dt > 0 then
    -- a gateway token's state has rpm only: it never learns
    local rpm, tpm = st.erpm or st.rpm, st.etpm or st.tpm
    if rpm > 0 then st.rt = math.min(reqCap(st), st.rt + dt * rpm / 60000) end
    if tpm > 0 then st.tt = math.min(tokCap(st), st.tt + dt * tpm / 60000) end
    st.ts = now
  end
end

-- Days since 1970-01-01 for a civil date (H. Hinnant's algorithm), and back.
local function daysFromCivil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local mp = (m + 9) % 12
  local doy = math.floor((153 * mp + 2) / 5) + d - 1
  local doe = yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy
  return era * 146097 + doe - 719468
end

local function civilFromDays(z)
  z = z + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
  local y = yoe + era * 400
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local m = mp < 10 and mp + 3 or mp - 9
  if m <= 2 then y = y + 1 end
  return y, m
end

-- Budget period (UTC) containing `now`: its id and the time it ends (-1: never).
local function budgetPeriod(per, now)
  if per == 'day' then
    local id = math.floor(now / 86400000)
    return id, (id + 1) * 86400000
  elseif per == 'month' then
    local y, m = civilFromDays(math.floor(now / 86400000))
    local ny, nm = y, m + 1
    if nm > 12 then ny, nm = y + 1, 1 end
    return y * 12 + m, daysFromCivil(ny, nm, 1) * 86400000
  end
  return 0, -1
end

-- Start a new budget period when the clock has moved past the stored one.
local function rollBudget(st, now)
  if st.bud < 0 then return -1 end
  local pid, pend = budgetPeriod(st.per, now)
  if st.pid ~= pid then
    st.pid = pid
    st.sp = 0
    if st.wr == 'budget' then st.wr = '' end
  end
  return pend
end

--- @include "window"

--[[
  When can this key take a request of `est` tokens and `estCost` nano-dollars?
  Returns kind, untilMs, reason, freeSlot:
    'ok'   usable now (untilMs = now)
    'wait' blocked until untilMs (then moved to the wait set with that score). Reasons
           rate_limited and cooling are reservations a caller may take: the key is sure to take
           the request at untilMs (see window.lua); the others (circuit_open, budget, concurrency)
           depend on events and are looked at again.
    'park' blocked until an operator or an event acts (disabled, revoked, draining, total budget)
    'skip' cannot take this particular request (too large for its token bucket or window, or for
           what is left of its budget: then untilMs is when the budget period ends, -1 never); left
           in place
  freeSlot: the index in st.fs of a reservation given back that this request takes over, or nil.
  Order matters: the reason reported is the first that blocks.
]]
-- A field this (or evaluateKept, keptStart: classes.lua) comes to change must be added to the
-- ones acquire puts back in the candidates it does not choose (acquire.lua, `was`).
local function evaluate(st, now, est, estCost, recheckMs, id, winKey, margin)
  if st.adm ~= 'active' then return 'park', -1, st.adm end
  if st.br == 'open' then
    if now < st.bu then return 'wait', st.bu, 'circuit_open' end
  elseif st.br == 'half_open' then
    -- exactly one probe fleet-wide: wait for it (its lease deadline bounds the wait)
    if st.bp ~= '' and st.bd > now then return 'wait', st.bd, 'circuit_open' end
  end
  local t, why = now, 'rate_limited'
  if st.cu > now then t, why = st.cu, 'cooling' end
  if st.bud >= 0 then
    local pend = rollBudget(st, now)
    if st.sp + st.rs + estCost > st.bud then
      if st.sp < st.bud then
        -- money is left: held by leases in flight (a release wakes the key at once), or less than
        -- this request needs while smaller ones still fit (left in place for them)
        if st.rs > 0 then return 'wait', now + recheckMs, 'budget' end
        return 'skip', pend, 'budget'
      end
      if pend < 0 then return 'park', -1, 'budget' end
      return 'wait', pend, 'budget'
    end
  end
  if st.mc > 0 and st.inf >= st.mc then return 'wait', now + recheckMs, 'concurrency' end
  refill(st, now)
  local rate = now
  if st.erpm > 0 and st.rw <= 0 and st.rt < 1 then rate = now + (1 - st.rt) * 60000 / st.erpm end
  if st.etpm > 0 and st.tw <= 0 then
    if est > tokCap(st) then return 'skip', -1, 'too_large' end
    if st.tt < est then rate = math.max(rate, now + (est - st.tt) * 60000 / st.etpm) end
  end
  local slot = nil
  if st.rw > 0 or st.tw > 0 then
    local w = windowEarliest(winKey, st, id, est, now, margin)
    if w < 0 then return 'skip', -1, 'too_large' end
    if w > rate then rate = w end
    -- a reservation given back, earlier than the end of the queue, goes to this request
    slot = freeSlot(st, est, now, t)
    if slot and st.fs[slot][1] < math.max(t, rate) then
      rate = st.fs[slot][1]
    else
      slot = nil
    end
  end
  if rate > t then t, why = rate, 'rate_limited' end
  if t <= now then return 'ok', now, '', slot end
  return 'wait', t, why, slot
end

-- Selection weight of a usable key: weight x size x remaining share x health x latency.
-- Size is the key's RPM (1000 when unlimited) so healthy keys share load in proportion to limits.
-- The remaining share (of its buckets and slots) only halves the weight of a nearly drained key:
-- a small burst drains and refills all the time, and at full weight that noise would outweigh
-- health (a busy healthy key would lose its traffic to an idle degraded one).
local function score(st)
  local frac = 1
  if st.erpm > 0 and st.rw <= 0 then frac = math.min(frac, st.rt / reqCap(st)) end
  if st.etpm > 0 and st.tw <= 0 then frac = math.min(frac, st.tt / tokCap(st)) end
  if st.mc > 0 then frac = math.min(frac, (st.mc - st.inf) / st.mc) end
  if frac < 0 then frac = 0 end
  local size = st.erpm > 0 and st.erpm or 1000
  return st.w * size * (0.5 + 0.5 * frac) * st.hs * 1000 / (1000 + st.p50)
end

-- Integer ms and the microseconds past it: integer replies, cheaper than formatting a float.
local function timeReply(ms)
  local whole = math.floor(ms)
  return whole, math.floor((ms - whole) * 1000 + 0.5)
end
