--[[
  Priority classes and tenant shares, for acquire.lua (docs/architecture.md, "Classes and tenants").

  Classes, highest first: critical, normal, low. A class may keep a share `keep` (0..1) of every
  key's request and token capacity (its window's quota, or its bucket) free for the classes above
  it (pool config priority.keepFree):
  - while a higher class waited in the last `higherWaitedMs` ("restricted"), the class may hold at
    most (1 - keep) of a request window's quota itself (its own log, classEarliest; a bucket or a token
    window must keep the share free after it); with nothing higher waiting it may take the whole key
    (the share is not wasted when nobody needs it);
  - with priority.spread its requests follow a schedule of one per window / quota on each key
    (spacedStart), and it holds at most one place ahead per key;
  - it reserves at most `reserveAheadMs` ahead (beyond that it is told when to come back: it holds
    no place), and while restricted only within the capacity that keeps the share free: a
    higher-class caller arriving later waits behind at most `reserveAheadMs` of lower-class
    reservations, and while it keeps waiting finds the share free in every window to come.
  "Waited" means: was given a reservation, or was refused for capacity (rate_limited, cooling,
  concurrency, kept_free, tenant_share). acquire notes it in the meta hash: hw:<class> = ms.

  Tenants (within a class): while the class is contended (one of its requests was given a
  reservation or refused for capacity in the last `horizon` ms, priority.tenantWindowMs), a request
  with a tenant (a gateway token's id, or the caller's `tenant`) is held back (tenant_share, come
  back within 100 ms) by the other tenants only:
  - admissions, now or by reservation: while its admissions per weight (counted over the last
    `horizon` ms and the reservations ahead) exceed those of the other *backlogged* tenants (those
    that waited in the last BACKLOG_MS or hold reservations ahead): mine x W > others x w. A tenant
    sending less than its share is served as it comes and limits nobody; the least served
    backlogged tenant per weight always may go, so the keys are never left idle;
  - reservations: while other tenants are active (counted at all), its reservations ahead per
    weight must stay below theirs plus one (mine / w < (others + 1) / W): a flooding tenant holds
    no deep queue of places that a tenant coming now and then would wait behind.
  A tenant alone is never held back, nor anyone while a lower class was admitted in the last
  LOWER_ACTIVE_MS (ha:<class> in the meta hash, written at each admission of normal and low): the
  lower class takes what this one leaves, so a held request's place would go to it, not to another
  tenant (bench:mixed: a flooding tenant's requests waited seconds while low filled the keys); the
  classes' rule serves the quiet tenants then. The meta hash keeps tq:<class> = JSON {tenant: {w: weight,
  lw: last waited ms, b: {100 ms slot: admissions}}}, trimmed at each use (tenants x buckets, not
  requests) and dropped when the class is no longer contended.
]]

-- the meta fields of the classes above: when one waited (hw), then when one waited long (hl,
-- classWaitedLong), read in one HMGET
local CLASS_ABOVE = {
  low = { 'hw:critical', 'hw:normal', 'hl:critical', 'hl:normal' }, normal = { 'hw:critical', 'hl:critical' }, critical = {},
}
local CLASS_BELOW = { critical = { 'ha:normal', 'ha:low' }, normal = { 'ha:low' }, low = {} }
local LOWER_ACTIVE_MS = 1000
local RETRY_SHARE_MS = 100
local BACKLOG_MS = 1000
-- Tenants a class's record (tq:<class>) names at most; more share the entry '~'. Tenants come from
-- callers, so without a cap one record (read and written by every contended acquire) could grow
-- without bound.
local MAX_TENANTS = 64
-- A tenant entry with no admission in this long and no recent wait is dropped when the record is written.
local STALE_MS = 10000

-- The entry of `tenant` in q, made when missing (as '~' once q names MAX_TENANTS tenants).
local function tenantEntry(q, tenant, w)
  local e = q[tenant]
  if e then return e, tenant end
  local n = 0
  for _ in pairs(q) do n = n + 1 end
  if n >= MAX_TENANTS then
    tenant = '~'
    e = q[tenant]
    if e then return e, tenant end
  end
  e = { w = w, b = {} }
  q[tenant] = e
  return e, tenant
end

-- Drop the entries of q that neither waited lately nor hold an admission of the last STALE_MS.
local function dropStale(q, now)
  local oldest = math.floor((now - STALE_MS) / 100)
  for t, e in pairs(q) do
    local live = e.lw ~= nil and e.lw > now - BACKLOG_MS
    if not live then
      for slot in pairs(e.b) do
        if tonumber(slot) > oldest then
          live = true
          break
        end
      end
    end
    if not live then q[t] = nil end
  end
end
local CAPACITY_REASONS = { rate_limited = true, cooling = true, concurrency = true, kept_free = true, tenant_share = true }

-- The class's rule for this request: keep (share kept free by admissions now), keepRes (by
-- reservations), maxWait (bounded), liftAt (when the restriction ends, or nil when not restricted),
-- room (requests of each windowed key's window left unused: `headroom` while a higher class's
-- request was given a place more than a slot ahead in the last `higherWaitedMs`, see
-- classWaitedLong; else 0).
-- Not restricted, a lower class uses the whole key (a pool of batch work alone is not held back).
local function classRule(metaKey, class, now, keepFree, higherWaitedMs, reserveAheadMs, maxWait, headroom)
  if keepFree <= 0 then return 0, 0, maxWait, nil, 0 end
  local fields = CLASS_ABOVE[class]
  local last, long = nil, nil
  if #fields > 0 then
    local v = redis.call('HMGET', metaKey, unpack(fields))
    local half = #fields / 2
    for i = 1, #fields do
      local t = tonumber(v[i])
      if t then
        if i <= half then
          if last == nil or t > last then last = t end
        elseif long == nil or t > long then
          long = t
        end
      end
    end
  end
  if last and last > now - higherWaitedMs then
    local room = (long and long > now - higherWaitedMs) and headroom or 0
    return keepFree, keepFree, math.min(maxWait, reserveAheadMs), last + higherWaitedMs, room
  end
  return 0, 0, math.min(maxWait, reserveAheadMs), nil, 0
end

-- A windowed key's request window counted as `room` requests smaller (never under one): st.erpm
-- lowered, which the caller puts back.
local function leaveRoom(st, room)
  if room > 0 and st.rw > 0 and st.erpm > 0 then
    local n = math.floor(st.erpm * st.rw / 60000)
    if n - room >= 1 then st.erpm = math.min(st.erpm, (n - room + 1e-6) * 60000 / st.rw) end
  end
end

-- evaluate (common.lua) for a request that must leave `keep` of the key's capacity free: the
-- windows' quotas shrink to (1 - keep), the buckets lose keep x their size; with `ownReq` the
-- request window is left whole (the class's own count is checked instead: classEarliest). The state
-- is as before on return (refilled to now).
local function evaluateKept(st, now, est, estCost, recheckMs, id, winKey, margin, keep, ownReq, room)
  refill(st, now)
  local erpm, etpm = st.erpm, st.etpm
  local dr, dt = 0, 0
  if erpm > 0 and not ownReq then
    if st.rw > 0 then st.erpm = erpm * (1 - keep) else dr = keep * reqCap(st) end
  end
  leaveRoom(st, room)
  if etpm > 0 then
    if st.tw > 0 then st.etpm = etpm * (1 - keep) else dt = keep * tokCap(st) end
  end
  st.rt, st.tt = st.rt - dr, st.tt - dt
  local kind, untilMs, reason, slot = evaluate(st, now, est, estCost, recheckMs, id, winKey, margin)
  st.erpm, st.etpm = erpm, etpm
  st.rt, st.tt = st.rt + dr, st.tt + dt
  return kind, untilMs, reason, slot
end

--[[
  A class that keeps a share of a request window logs its own admissions beside the key's, in the
  same sorted set (window.lua): <id>|c|<class>|<start, us, 16 digits>|<slot>. While restricted it
  may hold at most (1 - keep) of the window's quota itself, and the classes above use the rest *and*
  whatever it leaves: the share kept is the higher classes' at least, not an idle fifth on top of
  their use (bench:mixed: with the whole key's count held at 80%, normal's 30% of the traffic came
  out of the 80% and a fifth of every window stayed unused: the queue got 0.71 of what interactive
  left). Entries are trimmed to the window at each look and at each admission. Keys whose quota
  would be under one request a window keep the whole-key rule (evaluateKept).
]]
local function classLo(id, class)
  return id .. '|c|' .. class .. '|'
end

-- The class's own quota per window (and the window, margin included) while it keeps `keep`; 0 when
-- the key has no request window or that quota is under one.
local function classQuota(st, margin, keep)
  if st.rw <= 0 or st.erpm <= 0 or st.erpm * st.rw / 60000 < 1 then return 0, 0 end
  local n, w = reqQuota(st, margin)
  local q = math.floor(n * (1 - keep) + 1e-9)
  if q < 1 then return 0, 0 end
  return q, w
end

-- The earliest start >= now at which the class holds fewer than q admissions in the window w.
local function classEarliest(winKey, id, class, now, q, w)
  local lo = classLo(id, class)
  redis.call('ZREMRANGEBYLEX', winKey, '[' .. lo, '(' .. lo .. pad16(now - w))
  local count = redis.call('ZLEXCOUNT', winKey, '[' .. lo, '[' .. lo .. '~')
  if count < q then return now end
  local e = redis.call('ZRANGE', winKey, '[' .. lo, '[' .. lo .. '~', 'BYLEX', 'LIMIT', count - q, 1)
  return math.max(now, tonumber(string.sub(e[1], #lo + 1, #lo + 16)) / 1000 + w)
end

-- Log an admission of a class that keeps a share (keepCfg > 0: whether restricted or not, so the
-- count is right when a restriction begins).
local function classAdmit(winKey, st, id, class, keepCfg, margin, now, start, slot)
  if keepCfg <= 0 then return end
  local q, w = classQuota(st, margin, keepCfg)
  if q <= 0 then return end
  local lo = classLo(id, class)
  redis.call('ZREMRANGEBYLEX', winKey, '[' .. lo, '(' .. lo .. pad16(math.min(now, start) - w))
  redis.call('ZADD', winKey, 0, lo .. pad16(start) .. '|' .. slot)
end

-- The gap between a lower class's requests on a windowed key: W / N (the window over its quota),
-- 0 when the key has no request window.
local function spacing(st)
  local n, w = reqQuota(st, 0)
  if n <= 0 then return 0 end
  return w / n
end

-- A lower class (one that keeps a share free for those above it) starts a request on a windowed key
-- on a schedule of one per W / N: its admissions spread over the window instead of coming in
-- bursts, so slots free up all the time and a higher-class caller waits about W / N for the next
-- one, not for the last burst to leave the window (a burst of N repeats every W when waiting
-- callers take each slot as it frees). The schedule (st.sg, GCRA-style: the next start on time) moves
-- on by one gap at every admission of the key, whatever its class (spaceAdmitted), and a caller may
-- start one gap early: one that came late catches up once instead of pushing every later start back
-- (spaced from the latest real start, a few ms of lateness per start cost the key a tenth of its
-- quota). The key still admits N per W. A free slot (a reservation given back) is taken as it is.
-- Returns the start, or nil when `t` is nil.
local function spacedStart(st, t, slot)
  if not t or slot then return t end
  local gap = spacing(st)
  if gap > 0 and st.sg and st.sg - gap > t then return st.sg - gap end
  return t
end

-- Move the key's schedule on by one gap for an admission starting at `start` (not a free slot's).
local function spaceAdmitted(st, start)
  local gap = spacing(st)
  if gap > 0 then st.sg = math.max(st.sg or 0, start) + gap end
end

--[[
  Headroom: a share kept as a count of a window does not bind once the classes above use more than
  it (with keepFree.low 0.2 and interactive traffic at 30% of the keys, low fills the rest of every
  window), so a higher-class request that finds the window full waits for the next slot to free,
  and a burst of them queues one slot apart (bench:mixed: normal requests' waits up to 50-100 ms
  in a flood, for a tenant's p99 twice its idle one). While a higher class's request was given a
  place more than one slot ahead on its key (the window over its quota) in the last
  higherWaitedMs, a lower class also leaves `room` requests of each windowed key's window unused
  (priority.headroom): a higher request arriving then starts at once, and the next slot that frees
  refills the room instead of going to the lower class. It costs the lower class those requests of
  every window while it lasts (1 of 20 per key in bench:mixed).
]]

-- A request of `class` given a place `ahead` ms from now on a key (state st): a place more than one
-- slot of the key's window ahead (the window, margin included, over its quota) makes the classes
-- below leave their headroom (hl:<class> = now). Only the reservation counts, not a caller's sleep
-- between tries (a circuit, a budget or a tenant's share, which headroom does not help).
local function classWaitedLong(metaKey, class, now, ahead, st, margin)
  if class == 'low' or ahead <= 0 then return end
  local n, w = reqQuota(st, margin)
  if n > 0 and ahead > w / n then redis.call('HSET', metaKey, 'hl:' .. class, string.format('%.0f', math.floor(now))) end
end

-- When a request of `class` keeping `keep` free (and `room` requests of a windowed key's window
-- unused) may start on a key the full rules let start at `t`: the time and free slot, or nil (never
-- while it keeps the share).
local function keptStart(st, now, est, estCost, recheckMs, id, winKey, margin, keep, room, t, slot, class)
  if keep <= 0 then return t, slot end
  local q, w = classQuota(st, margin, keep)
  local kind, untilMs, _, s = evaluateKept(st, now, est, estCost, recheckMs, id, winKey, margin, keep, q > 0, room)
  local at
  if kind == 'ok' then
    at = now
  elseif kind == 'wait' then
    at = untilMs
  else
    return nil, nil
  end
  if q > 0 then
    local c = classEarliest(winKey, id, class, now, q, w)
    if c > at then
      -- later than the free slot found: no earlier than the windows' own next place without it
      -- (less the room left)
      if s then
        local erpm = st.erpm
        leaveRoom(st, room)
        c = math.max(c, windowEarliest(winKey, st, id, est, now, margin))
        st.erpm = erpm
      end
      at, s = c, nil
    end
  end
  return at, s
end

-- A tenant waited (given a reservation, or refused for capacity): it counts as backlogged in
-- its class for BACKLOG_MS (q: the class's tenants, read when nil).
local function tenantWaited(metaKey, class, now, tenant, w, q)
  if tenant == '' then return end
  if not q then
    local raw = redis.call('HGET', metaKey, 'tq:' .. class)
    q = raw and cjson.decode(raw) or {}
  end
  dropStale(q, now)
  local e = tenantEntry(q, tenant, w)
  e.w, e.lw = w, math.floor(now)
  redis.call('HSET', metaKey, 'tq:' .. class, cjson.encode(q))
end

-- A refusal reply {0, reason, retryAfterMs, version}: a class (and the tenant) refused for
-- capacity is noted as having waited.
local function classRefused(metaKey, class, now, reply, tenant, w)
  if CAPACITY_REASONS[reply[2]] then
    redis.call('HSET', metaKey, 'hw:' .. class, string.format('%.0f', math.floor(now)))
    if tenant then tenantWaited(metaKey, class, now, tenant, w, nil) end
  end
  return reply
end

--[[
  Turns for callers that wait but hold no place: their class reserves less ahead than they wait
  (priority.reserveAheadMs, 0 by default, caps the reservations of a class that keeps a share:
  low, and normal when keepFree.normal > 0). Told "come back when the earliest key frees", every such
  caller came back in the same millisecond, one was admitted and the others were refused again:
  with 64 queue jobs waiting, about 1,800 refused tries a second (bench:mixed) for ~28 admissions.
  Instead each refused caller is given its own time: the later of when a key frees and one step
  after the last turn given for the key group (meta wt:<class>:<group>), turns reaching at most
  TURN_HORIZON_MS ahead unless no key frees before. The step is the time the group needs to free
  one request at its keys' limits: the refusing key's interval between requests (its window over
  its quota, or its rate) over the number of keys in the group; turns are never fewer than the
  group can admit, so no key idles while callers sleep on turns (a key limited only by concurrency
  or by tokens gets no turns: its caller comes back when the key frees, as before). A turn holds
  nothing: a caller of any class may take the capacity meanwhile, and a caller that finds it taken
  is given a new turn. A caller whose turn would come after its wait ends takes none: it comes back
  at a random time between when a key frees and the end of its wait (those callers do not all come
  back in the same millisecond either). `st` is the state of the key whose time the reply names,
  `g` its group's index in KEYS, `rnd` a random number in [0, 1) from the caller. Returns the reply
  with its retry moved.
]]
local TURN_HORIZON_MS = 1000
-- the round trip a caller needs to see the answer: a retry at the very end of its wait would be past it
local TURN_SLACK_MS = 5
local function classTurn(metaKey, class, now, reply, callerWait, st, groupSize, rnd)
  if reply[3] < 0 or not CAPACITY_REASONS[reply[2]] or reply[2] == 'tenant_share' or not st then return reply end
  local interval = 0
  if st.rw > 0 then
    interval = spacing(st)
  elseif st.erpm > 0 then
    interval = 60000 / st.erpm
  end
  if interval <= 0 then return reply end
  local step = interval / math.max(1, groupSize)
  local f = 'wt:' .. class .. ':' .. tostring(st.g)
  local last = tonumber(redis.call('HGET', metaKey, f)) or 0
  local t = math.max(now + reply[3], math.min(last + step, now + TURN_HORIZON_MS))
  if t - now > callerWait then
    local room = callerWait - TURN_SLACK_MS - reply[3]
    if room > 0 then reply[3] = reply[3] + math.floor(rnd * room) end
    return reply
  end
  redis.call('HSET', metaKey, f, string.format('%.0f', math.ceil(t)))
  reply[3] = math.ceil(t - now)
  return reply
end

-- An admission given (start: now, or later for a reservation): a reservation notes the class
-- and the tenant as having waited; a tenant counted (contended class) gets it in its 100 ms bucket.
local function classAdmitted(metaKey, class, now, tenant, q, w, start)
  if class ~= 'critical' then redis.call('HSET', metaKey, 'ha:' .. class, string.format('%.0f', math.floor(now))) end
  if start > now then
    redis.call('HSET', metaKey, 'hw:' .. class, string.format('%.0f', math.floor(now)))
    if tenant ~= '' and not q then q = {} end
  end
  if q and tenant ~= '' then
    local e = tenantEntry(q, tenant, w)
    e.w = w
    if start > now then e.lw = math.floor(now) end
    local slot = tostring(math.floor(start / 100))
    e.b[slot] = (e.b[slot] or 0) + 1
    redis.call('HSET', metaKey, 'tq:' .. class, cjson.encode(q))
  end
end

-- The weight of the request's tenant: ARGV's, else the admitted gateway token's (settings
-- `weight`), else 1.
local function tenantWeight(arg, admission)
  local w = tonumber(arg)
  if w and w > 0 then return w end
  if admission then
    local cfg = cjson.decode(admission.raw)
    if type(cfg.weight) == 'number' and cfg.weight > 0 then return cfg.weight end
  end
  return 1
end

-- While the class is contended (one of its requests waited in the last `horizon` ms): its
-- tenants' admissions that started in the last `horizon` ms or start later, in 100 ms buckets;
-- and nil when `tenant` (weight w) may take one more, else the ms to wait. Only the other tenants
-- that are backlogged (waited in the last BACKLOG_MS, or hold reservations ahead) hold it back: a
-- tenant sending less than its share is served as it comes and limits nobody. Not contended: no
-- counting (nil, nil).
local function tenantShare(metaKey, class, now, tenant, w, horizon, reserving)
  local v = redis.call('HMGET', metaKey, 'hw:' .. class, 'tq:' .. class, unpack(CLASS_BELOW[class]))
  local waited = tonumber(v[1])
  if not waited or waited <= now - horizon then
    if v[2] then redis.call('HDEL', metaKey, 'tq:' .. class) end
    return nil, nil
  end
  -- a lower class admitted lately takes what this class leaves: holding a tenant back would hand
  -- its place to that class, not to another tenant (counted, never held)
  local lowerActive = false
  for i = 3, 2 + #CLASS_BELOW[class] do
    local t = tonumber(v[i])
    if t and t > now - LOWER_ACTIVE_MS then lowerActive = true end
  end
  local q = v[2] and cjson.decode(v[2]) or {}
  local oldest = math.floor((now - horizon) / 100) -- buckets up to this one are over
  local ahead = math.floor(now / 100)              -- this bucket and later ones: reservations (the current one counted whole)
  local mine, others, W = 0, 0, 0                  -- admissions: mine, the backlogged others'
  local myAhead, allAhead, Wactive = 0, 0, 0       -- reservations ahead; weights of the other active tenants
  -- a tenant past the record's cap is counted as '~' (tenantEntry)
  local me = tenant
  if q[me] == nil then
    local n = 0
    for _ in pairs(q) do n = n + 1 end
    if n >= MAX_TENANTS then me = '~' end
  end
  for t, e in pairs(q) do
    local n, b, pend, later = 0, {}, 0, false
    for slot, c in pairs(e.b) do
      local sn = tonumber(slot)
      if sn > oldest then
        b[slot] = c
        n = n + c
        if sn >= ahead then pend = pend + c end
        if sn > ahead then later = true end
      end
    end
    -- backlogged: waited lately, or holds a reservation beyond this 100 ms (an admission of now
    -- is in this bucket: it does not make a tenant backlogged)
    local backlogged = later or (e.lw ~= nil and e.lw > now - BACKLOG_MS)
    if n == 0 and not backlogged then
      q[t] = nil
    else
      e.b = b
      allAhead = allAhead + pend
      if t == me then
        mine, myAhead = n, pend
      else
        Wactive = Wactive + e.w
        if backlogged then others, W = others + n, W + e.w end
      end
    end
  end
  if lowerActive then return q, nil end
  -- one more is fine while the tenant's count per weight is not above the backlogged others'
  -- (a tenant alone always may): the least served tenant per weight always can, so nothing stalls
  if W > 0 and mine * W > others * w then return q, RETRY_SHARE_MS end
  -- a reservation: while other tenants are active, its reservations ahead per weight stay below
  -- the others' plus one (myAhead / w < (othersAhead + 1) / Wactive), so a tenant that comes now
  -- and then finds no deep queue of another's ahead of it
  if reserving and Wactive > 0 and myAhead * Wactive >= (allAhead - myAhead + 1) * w then
    return q, RETRY_SHARE_MS
  end
  return q, nil
end
