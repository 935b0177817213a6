--[[
  Pick a usable key for a model and take, atomically: one request token, the estimated tokens,
  a concurrency slot with a deadline, and the estimated cost from the budget. When no key can take
  the request now, reserve the earliest admission the pool can give within the caller's wait
  ("start at T": the request's place in the key's rate windows or bucket is taken now, so callers
  are served first come, first served fleet-wide, with no second call).

  With a gateway token (ARGV[11] not ''), the token is admitted in the same call, first: a refused
  token gets its refusal and no key is looked at; a token admitted while no key can be had (nothing
  usable, nothing to reserve) is not taken either (nothing is written for it). A reservation ("start
  at T") counts as admitted: the caller holds a lease.

  KEYS (9 + 2 per group, so the caller passes numkeys and the file name has no count):
  KEYS[1] cfg  KEYS[2] st  KEYS[3] leases (zset lease -> deadline)  KEYS[4] meta  KEYS[5] win (the
  enforcement windows' log, see includes/window.lua)  KEYS[6] tok  KEYS[7] tok:st  KEYS[8] tok:res
  (see includes/tokens.lua); then two per key group that serves the model:
  KEYS[7+2i] avail set, KEYS[8+2i] wait zset; last, KEYS[#KEYS] ser (the traffic counters, see
  includes/series.lua: admitted, waited and refused per class and tenant, counted here)
  ARGV[1] estimated tokens  ARGV[2] estimated cost (nano-dollars)  ARGV[3] lease timeout ms
  ARGV[4] concurrency recheck ms  ARGV[5] random number in [0,1) for the final choice
  ARGV[6] excluded key ids, comma-separated  ARGV[7] candidates per round (power of k choices)
  ARGV[8] random seed (used only when the model is served by several groups)
  ARGV[9] the longest the caller will wait for a reservation, ms (0: now or not at all)
  ARGV[10] window margin ms (added to every enforcement window)
  ARGV[11] sha256 hex of a gateway token to admit ('' = none; then ARGV[12..15] are placeholders)
  ARGV[12] model or route the token asks for  ARGV[13] the token's estimated cost, nano-dollars
  ARGV[14] token reservation lifetime ms (from the request's start)  ARGV[15] '1': send the
  token's settings JSON back
  ARGV[16] priority class: critical | normal | low  ARGV[17] tenant ('' = the admitted token's
  id, else none)
  ARGV[18] share of each key this class keeps free for higher classes (0..1, includes/classes.lua)
  ARGV[19] ms a higher class's wait restricts this class  ARGV[20] furthest ahead this class
  reserves when it keeps a share  ARGV[21] the tenant's weight ('' = the token's `weight`, or 1)
  ARGV[22] ms of admissions the tenants' shares count  ARGV[23] ms the caller has slept between tries so far
  (0: its first try; counted as its wait)  ARGV[24] '1': do not count a refusal (a partitioned pool's try
  of one partition among several)  ARGV[25] 1: a class that keeps a share spreads its requests over
  each key's window (includes/classes.lua spacedStart; priority.spread)  ARGV[26] Redis time (ms)
  after which the caller no longer waits for this call (0: none): run later (Redis stalled with the
  call already on its socket), it takes nothing and answers 'expired'  ARGV[27] requests of each
  windowed key's window this class leaves unused while a higher class waited long (priority.headroom,
  includes/classes.lua; absent: 0)
  Reply: {1, keyId, lease, deadlineMs, nowMs, nowMicros, version, probe 0|1, startInMs
          [, tokenId, reservation, settingsJSON | '', spentNanos, reservedNanos, periodEndMs]}
      or {0, reason, retryAfterMs (-1: not by waiting), version}; reasons of the classes
         (includes/classes.lua): kept_free (the share kept for a higher class, or the spread
         schedule's next start not come yet), tenant_share
      or {0, 'expired', 0, version, nowMs, nowMicros}: ARGV[26] had passed; nothing was read or
         written (the caller, if it still waits, tries again)
      or {2, tokenRefusal, retryAfterMs (-1: not by waiting), tokenId ('' when unknown)}: the
         token was refused (reasons of tokenAdmit-3.lua, and priority_not_allowed: class
         critical for a token without allowCritical), nothing changed
  startInMs: 0 now; else the caller starts its request that much later (or gives the lease back
  unused, which frees its place for the next caller).

  Cost does not grow with the pool: blocked keys are moved out of the avail set into the wait zset
  scored by the time they become usable, and come back when that time passes (or on release).
  Each acquire samples a few candidates, so its work is bounded by the number of state changes.
]]
--- @include "common"
--- @include "tokens"
--- @include "series"
--- @include "classes"

local cfgKey, stKey, leasesKey, metaKey, winKey = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local est = tonumber(ARGV[1])
local estCost = tonumber(ARGV[2])
local recheckMs = tonumber(ARGV[4])
local excluded = {}
if ARGV[6] ~= '' then
  for id in string.gmatch(ARGV[6], '[^,]+') do excluded[id] = true end
end
local k = tonumber(ARGV[7])
local maxWait = tonumber(ARGV[9])
local margin = tonumber(ARGV[10])
local class = ARGV[16]
local tenant = ARGV[17]
local now = nowMs()
local serKey = KEYS[#KEYS]
-- A call its caller stopped waiting for (its Redis timeout passed while Redis stalled, the call
-- already on the socket) takes nothing: nobody would release the lease, the token's request or
-- its reservation.
local validUntil = tonumber(ARGV[26]) or 0
if validUntil > 0 and now > validUntil then
  local whole, micros = timeReply(now)
  return { 0, 'expired', 0, tonumber(redis.call('HGET', metaKey, 'v') or '0'), whole, micros }
end

-- 0. The gateway token first: a refusal touches no key.
local admission = nil
if ARGV[11] and ARGV[11] ~= '' then
  local refusal
  admission, refusal = tokenCheck(KEYS[6], KEYS[7], KEYS[8], ARGV[11], ARGV[12], tonumber(ARGV[13]), recheckMs, now)
  if not admission then
    refusal[1] = 2
    seriesAcquire(serKey, now, class, tenant, 'r', 0)
    return refusal
  end
end
if tenant == '' and admission then tenant = admission.id end
if class == 'critical' and admission and not cjson.decode(admission.raw).allowCritical then
  seriesAcquire(serKey, now, class, tenant, 'r', 0)
  return { 2, 'priority_not_allowed', -1, admission.id }
end
local keep, keepRes, liftAt, room
keep, keepRes, maxWait, liftAt, room = classRule(metaKey, class, now, tonumber(ARGV[18]) or 0, tonumber(ARGV[19]) or 0, tonumber(ARGV[20]) or 0, maxWait, tonumber(ARGV[27]) or 0)
-- a class that keeps a share free for those above it spreads its requests (classes.lua spacedStart)
local keepCfg = tonumber(ARGV[18]) or 0
local spaced = ARGV[25] == '1' and keepCfg > 0
local keptAt = nil -- a key free under the full rules, refused to keep the share: when it would take this
local keptSt, keptG = nil, 1 -- that key's state and group

local ngroups = (#KEYS - 9) / 2
local function avail(i) return KEYS[7 + 2 * i] end
local function waitz(i) return KEYS[8 + 2 * i] end
local RESERVABLE = { rate_limited = true, cooling = true }

-- 1. Give back the slots of a few leases whose holder never released them (process killed).
-- Arguments to redis.call are strings made once: converting a Lua number costs more than most of
-- the commands here (scores are whole ms for the same reason).
local nowStr = tostring(math.floor(now))
local expired = redis.call('ZRANGEBYSCORE', leasesKey, '-inf', nowStr, 'LIMIT', '0', '8')
for _, lease in ipairs(expired) do
  -- a retired key removed here may leave its id in its group's sets: the acquire that meets it drops it
  reapLease(cfgKey, stKey, leasesKey, metaKey, lease)
end

-- 2. Keys whose wait is over become candidates again.
for i = 1, ngroups do
  local due = redis.call('ZRANGEBYSCORE', waitz(i), '-inf', nowStr, 'LIMIT', '0', '32')
  if #due > 0 then
    redis.call('SADD', avail(i), unpack(due))
    redis.call('ZREM', waitz(i), unpack(due))
  end
end

-- 3. Sample candidates; move the blocked ones out of the avail sets.
local sizes, total = {}, 0
if ngroups == 1 then
  -- the size is learnt from SRANDMEMBER (it returns fewer than asked only when the set is smaller)
  total = math.huge
  sizes[1] = total
else
  math.randomseed(tonumber(ARGV[8]))
  for i = 1, ngroups do
    sizes[i] = redis.call('SCARD', avail(i))
    total = total + sizes[i]
  end
end

local function sample(n)
  if ngroups == 1 then
    local ids = redis.call('SRANDMEMBER', avail(1), ARGV[7])
    if #ids < n then total = #ids end
    return ids, nil
  end
  local ids, from = {}, {}
  for _ = 1, n do
    if total <= 0 then break end
    local r = math.random() * total
    for i = 1, ngroups do
      if r < sizes[i] or i == ngroups then
        if sizes[i] > 0 then
          local id = redis.call('SRANDMEMBER', avail(i))
          if id then
            ids[#ids + 1] = id
            from[#ids] = i
          end
        end
        break
      end
      r = r - sizes[i]
    end
  end
  return ids, from
end

local seen, usable, nseen = {}, {}, 0
local reserve = nil -- the earliest reservation among the keys looked at: {id, st, t, slot, g}
local function consider(id, st, g, t, slot)
  t, slot = keptStart(st, now, est, estCost, recheckMs, id, winKey, margin, keepRes, room, t, slot, class)
  -- a spaced class holds at most one place ahead per key: a higher class waits behind one gap at most
  local horizon = maxWait
  if spaced then
    t = spacedStart(st, t, slot)
    local gap = spacing(st)
    if gap > 0 then horizon = math.min(horizon, gap) end
  end
  if t and t - now <= horizon and (reserve == nil or t < reserve.t) then
    reserve = { id = id, st = st, t = t, slot = slot, g = g }
  end
end
local budgetSkip = nil -- a key skipped because this request exceeds what is left of its budget: when that ends
local rounds = 0
-- Sample until k usable candidates are in hand (or none is left unexamined): a blocked candidate
-- must not hand the choice to the other one by default, or a degraded key would win every time
-- its partner happens to be blocked.
while #usable < k and total > nseen + #usable and rounds < 8 do
  rounds = rounds + 1
  local ids, from = sample(k)
  if #ids == 0 then break end
  -- the states of the candidates not seen yet, in one command
  local want = {}
  for _, id in ipairs(ids) do
    if not seen[id] and not excluded[id] then want[#want + 1] = id end
  end
  local raws = #want > 0 and redis.call('HMGET', stKey, unpack(want)) or {}
  local rawOf = {}
  for j, id in ipairs(want) do rawOf[id] = raws[j] end
  local fresh = 0
  for j, id in ipairs(ids) do
    if not seen[id] then
      fresh = fresh + 1
      seen[id] = true
      local g = from and from[j] or 1
      if excluded[id] then
        nseen = nseen + 1
      else
        local st, wasKept = stateFrom(stKey, id, rawOf[id])
        if not st then
          -- removed key left in a set
          redis.call('SREM', avail(g), id)
          sizes[g] = sizes[g] - 1
          total = total - 1
        else
          -- what evaluate may change, to give the table back as decoded if it is not chosen
          local rt, tt, ts, pid, sp, wr, fs, erpm, etpm = st.rt, st.tt, st.ts, st.pid, st.sp, st.wr, st.fs, st.erpm, st.etpm
          local kind, untilMs, reason, slot = evaluate(st, now, est, estCost, recheckMs, id, winKey, margin)
          if kind == 'ok' and (keep > 0 or spaced) then
            local t
            t, slot = keptStart(st, now, est, estCost, recheckMs, id, winKey, margin, keep, room, now, slot, class)
            if spaced then t = spacedStart(st, t, slot) end
            if t ~= now then kind, untilMs = 'kept', t or liftAt end
          end
          if kind == 'kept' then
            nseen = nseen + 1
            if keptAt == nil or untilMs < keptAt then keptAt, keptSt, keptG = untilMs, st, g end
            -- free soon under the class's rules: a place there, if nothing is free now
            if spaced and maxWait > 0 then consider(id, st, g, untilMs, slot) end
          elseif kind == 'ok' then
            usable[#usable + 1] = { id = id, st = st, s = score(st), g = g, t = now, slot = slot,
              was = wasKept and { rawOf[id], rt, tt, ts, pid, sp, wr, fs, erpm, etpm } or nil }
          elseif kind == 'skip' then
            nseen = nseen + 1
            if reason == 'budget' then
              local t = untilMs < 0 and PARKED or untilMs
              if budgetSkip == nil or t < budgetSkip then budgetSkip = t end
              if st.wr ~= 'budget' then
                -- status shows it out of budget until a request fits again
                st.wr = 'budget'
                saveChanging(stKey, id, st)
              end
            end
          else
            redis.call('SREM', avail(g), id)
            sizes[g] = sizes[g] - 1
            total = total - 1
            redis.call('ZADD', waitz(g), kind == 'wait' and math.ceil(untilMs) or PARKED, id)
            st.wr = reason
            -- it may still become this request's reservation (consider), changed then
            saveChanging(stKey, id, st)
            if kind == 'wait' and RESERVABLE[reason] then consider(id, st, g, untilMs, slot) end
          end
        end
      end
    end
  end
  -- nothing new in this sample: a small set, maybe all seen; learn its size
  if fresh == 0 and total == math.huge then total = redis.call('SCARD', avail(1)) end
end

local version = tonumber(redis.call('HGET', metaKey, 'v') or '0')
local tenantQ, tenantW = nil, tenant ~= '' and tenantWeight(ARGV[21], admission) or 1

if #usable == 0 and maxWait > 0 then
  -- the keys that become usable first may take a reservation (their wait-set score is when they
  -- were last judged free: look again at the first few of each group)
  for i = 1, ngroups do
    local head = redis.call('ZRANGEBYSCORE', waitz(i), '-inf', tostring(math.floor(now + maxWait)), 'LIMIT', '0', '4')
    for _, id in ipairs(head) do
      if not seen[id] and not excluded[id] then
        seen[id] = true
        local st = loadState(stKey, id)
        if st then
          local kind, untilMs, reason, slot = evaluate(st, now, est, estCost, recheckMs, id, winKey, margin)
          if kind == 'ok' then
            consider(id, st, i, now, slot)
          elseif kind == 'wait' and RESERVABLE[reason] then
            consider(id, st, i, untilMs, slot)
          end
        end
      end
    end
  end
  if reserve then
    usable[1] = { id = reserve.id, st = reserve.st, s = 1, g = reserve.g, t = reserve.t, slot = reserve.slot }
  end
end

-- Refused (not 'busy': the caller tries again at once). A refusal the caller waits out (its retry
-- comes within the wait it asked for, ARGV[9]) is not counted: the try that ends it is.
local callerWait = tonumber(ARGV[9])
-- st, g: the key whose time a refusal names, and its group
local function refused(reply, st, g)
  -- a caller that waits but may hold no place is given its own turn (classes.lua classTurn)
  if maxWait < callerWait and st then
    reply = classTurn(metaKey, class, now, reply, callerWait, st, redis.call('SCARD', avail(g)) + redis.call('ZCARD', waitz(g)), tonumber(ARGV[5]))
  end
  if ARGV[24] ~= '1' and not (reply[3] >= 0 and reply[3] <= callerWait) then seriesAcquire(serKey, now, class, tenant, 'r', 0) end
  return reply
end
if #usable == 0 then
  -- a key held only for the share kept free answers before "try again at once": such keys stay
  -- candidates, and with many of them a lower class's every try would sample only those (a storm of
  -- busy answers while the pool is full)
  if keptAt then return refused(classRefused(metaKey, class, now, { 0, 'kept_free', math.max(1, math.ceil(math.min(keptAt, liftAt or keptAt) - now)), version }, tenant, tenantW), keptSt, keptG) end
  if total > nseen then
    -- sampling gave up with candidates left unexamined: try again at once
    return { 0, 'busy', 0, version }
  end
  -- Nothing usable: say when the earliest waiting key becomes usable, and why it waits.
  local best, bestSt, bestG = nil, nil, 1
  for i = 1, ngroups do
    for _ = 1, 8 do
      local first = redis.call('ZRANGE', waitz(i), 0, 0, 'WITHSCORES')
      if not first[1] then break end
      local st = loadState(stKey, first[1])
      if st then
        if best == nil or tonumber(first[2]) < best then best, bestSt, bestG = tonumber(first[2]), st, i end
        break
      end
      redis.call('ZREM', waitz(i), first[1]) -- a removed key
    end
  end
  if budgetSkip and (best == nil or best >= PARKED or (bestSt.wr == 'budget' and budgetSkip < best)) then
    return refused({ 0, 'budget', budgetSkip >= PARKED and -1 or math.max(0, math.ceil(budgetSkip - now)), version })
  end
  if best == nil then
    if nseen > 0 and next(excluded) == nil then return refused({ 0, 'too_large', -1, version }) end
    return refused({ 0, 'unavailable', -1, version })
  end
  local reason = 'rate_limited'
  if bestSt.wr ~= '' then reason = REPORTED[bestSt.wr] and bestSt.wr or 'unavailable' end
  if best >= PARKED then return refused({ 0, reason, -1, version }) end
  return refused(classRefused(metaKey, class, now, { 0, reason, math.max(0, math.ceil(best - now)), version }, tenant, tenantW), bestSt, bestG)
end

-- The usable candidates not chosen (all of them, for a refusal) were not saved: put back as they
-- were decoded (evaluate changed only the fields in `was`, after the bytes: refill, rollBudget,
-- freeSlot; evaluateKept puts erpm and etpm back), their tables are kept for the bytes the hash
-- still holds (common.lua keepState), so the next script to read them (a release, the next
-- acquire) does not decode them again. Only those that were kept already: a key read often; on a
-- large pool most candidates are read once in a while, and keeping them would push out the states
-- their releases will read.
local function giveBack(chosen)
  for _, c in ipairs(usable) do
    local w = c.was
    if c ~= chosen and w then
      local s = c.st
      s.rt, s.tt, s.ts, s.pid, s.sp, s.wr, s.fs, s.erpm, s.etpm = w[2], w[3], w[4], w[5], w[6], w[7], w[8], w[9], w[10]
      keepState(stKey, c.id, w[1], s)
    end
  end
end
if tenant ~= '' then
  local over
  tenantQ, over = tenantShare(metaKey, class, now, tenant, tenantW, tonumber(ARGV[22]) or 2000, #usable == 1 and usable[1].t > now)
  if over then
    tenantWaited(metaKey, class, now, tenant, tenantW, tenantQ)
    giveBack(nil)
    return refused(classRefused(metaKey, class, now, { 0, 'tenant_share', over, version }))
  end
end

-- 4. Choose among the usable candidates with probability proportional to their score.
local chosen = usable[1]
if #usable > 1 then
  local sum = 0
  for _, c in ipairs(usable) do sum = sum + c.s end
  local r = tonumber(ARGV[5]) * sum
  for _, c in ipairs(usable) do
    r = r - c.s
    if r <= 0 then chosen = c break end
  end
end

giveBack(chosen)
local st, id, start = chosen.st, chosen.id, chosen.t
local seq = redis.call('HINCRBY', metaKey, 'seq', 1)
local slot = seq
if chosen.slot then
  -- a reservation given back: this request takes its place in the windows as it is
  slot = st.fs[chosen.slot][3]
  start = st.fs[chosen.slot][1]
  table.remove(st.fs, chosen.slot)
elseif st.rw > 0 or st.tw > 0 then
  windowAdmit(winKey, st, id, est, start, slot)
  spaceAdmitted(st, start)
end
classAdmit(winKey, st, id, class, keepCfg, margin, now, start, slot)
classAdmitted(metaKey, class, now, tenant, tenantQ, tenantW, start)
local lease = seq .. ':' .. id .. ':' .. ARGV[1] .. ':' .. ARGV[2] .. ':'
  .. string.format('%.0f', math.floor(start * 1000 + 0.5)) .. ':' .. slot
local deadline = math.ceil(start + tonumber(ARGV[3]))
local probe = 0
if st.br == 'open' or (st.br == 'half_open' and (st.bp == '' or st.bd <= now)) then
  st.br, st.bp, st.bd = 'half_open', lease, deadline
  probe = 1
end
if st.erpm > 0 and st.rw <= 0 then st.rt = st.rt - 1 end
if st.etpm > 0 and st.tw <= 0 then st.tt = st.tt - est end
st.inf = st.inf + 1
st.rs = st.rs + estCost
if start > now then
  -- reserved: the key waits until its next admission is possible (judged again when that comes)
  local kind, untilMs, reason = evaluate(st, now, est, estCost, recheckMs, id, winKey, margin)
  if kind == 'wait' then
    redis.call('SREM', avail(chosen.g), id)
    redis.call('ZADD', waitz(chosen.g), math.ceil(untilMs), id)
    st.wr = reason
  end
else
  st.wr = ''
end
saveState(stKey, id, st)
redis.call('ZADD', leasesKey, deadline, lease)
-- a caller that slept between tries (ARGV[23] ms) waited too, though this try admits it now
local waited = (start - now) + (tonumber(ARGV[23]) or 0)
seriesAcquire(serKey, now, class, tenant, waited > 0 and 'w' or 'a', waited)
classWaitedLong(metaKey, class, now, start - now, st, margin)
local nowWhole, nowMicros = timeReply(now)
local reply = { 1, id, lease, deadline, nowWhole, nowMicros, version, probe, math.max(0, math.ceil(start - now)) }
if admission then
  local reservation = tokenTake(KEYS[7], KEYS[8], admission, tonumber(ARGV[13]), ARGV[13], start + tonumber(ARGV[14]))
  local tst = admission.st
  reply[10], reply[11], reply[12], reply[13], reply[14], reply[15] =
    admission.id, reservation, ARGV[15] == '1' and admission.raw or '', tst.sp, tst.rs, admission.pend
end
return reply
