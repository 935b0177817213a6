--[[
  Priority classes and tenant shares, for acquire.lua (docs/architecture.md, "Classes and tenants").

  Classes, highest first: critical, normal, low. A class may keep a share `keep` (0..1) of every
  key's request and token capacity (its window's quota, or its bucket) free for the classes above
  it (pool config priority.keepFree):
  - a request of that class is admitted now only if the key still has that share free after it,
    while a higher class waited in the last `higherWaitedMs` ("restricted"); with nothing higher
    waiting it may take the whole key (the share is not wasted when nobody needs it);
  - it never takes a reservation while restricted (it is told when to come back instead), and
    otherwise reserves at most `reserveAheadMs` ahead and only within the capacity that keeps the
    share free: a higher-class caller arriving later finds the share free in every window to come
    and waits behind at most `reserveAheadMs` of lower-class reservations.
  "Waited" means: was given a reservation, or was refused for capacity (rate_limited, cooling,
  concurrency, kept_free, tenant_share). acquire notes it in the meta hash: hw:<class> = ms.

  Tenants (within a class): while the class is contended (one of its requests was given a
  reservation or refused for capacity in the last `horizon` ms, priority.tenantWindowMs), a request
  with a tenant (a gateway token's id, or the caller's `tenant`) is admitted, now or by
  reservation, only while its tenant's admissions per weight do not exceed the other tenants':
  mine x W <= others x w, counting admissions that started in the last `horizon` ms or start later
  (W, others: the weights and counts of the other tenants counted). A tenant alone always may, and
  the least served tenant per weight always may, so the keys are never left idle; a flooding
  tenant is refused (tenant_share, retry within 100 ms: the others may catch up at any time)
  until the others catch up, so admissions follow the weights whatever the number of callers.
  The meta hash keeps tq:<class> = JSON {tenant: {w: weight, b: {100 ms slot: count}}}, trimmed at
  each use (its size: tenants x buckets, not requests) and dropped when the class is no longer
  contended.
]]

local CLASS_ABOVE = { low = { 'hw:critical', 'hw:normal' }, normal = { 'hw:critical' }, critical = {} }
local RETRY_SHARE_MS = 100
local CAPACITY_REASONS = { rate_limited = true, cooling = true, concurrency = true, kept_free = true, tenant_share = true }

-- The class's rule for this request: keep (share kept free by admissions now), keepRes (by
-- reservations), maxWait (bounded), liftAt (when the restriction ends, or nil when not restricted).
local function classRule(metaKey, class, now, keepFree, higherWaitedMs, reserveAheadMs, maxWait)
  if keepFree <= 0 then return 0, 0, maxWait, nil end
  local above = CLASS_ABOVE[class]
  local last = nil
  if #above > 0 then
    for _, v in ipairs(redis.call('HMGET', metaKey, unpack(above))) do
      local t = tonumber(v)
      if t and (last == nil or t > last) then last = t end
    end
  end
  if last and last > now - higherWaitedMs then
    return keepFree, keepFree, 0, last + higherWaitedMs
  end
  return 0, keepFree, math.min(maxWait, reserveAheadMs), nil
end

-- evaluate (common.lua) for a request that must leave `keep` of the key's capacity free: the
-- windows' quotas shrink to (1 - keep), the buckets lose keep x their size. The state is as before
-- on return (refilled to now).
local function evaluateKept(st, now, est, estCost, recheckMs, id, winKey, margin, keep)
  refill(st, now)
  local erpm, etpm = st.erpm, st.etpm
  local dr, dt = 0, 0
  if erpm > 0 then
    if st.rw > 0 then st.erpm = erpm * (1 - keep) else dr = keep * reqCap(st) end
  end
  if etpm > 0 then
    if st.tw > 0 then st.etpm = etpm * (1 - keep) else dt = keep * tokCap(st) end
  end
  st.rt, st.tt = st.rt - dr, st.tt - dt
  local kind, untilMs, reason, slot = evaluate(st, now, est, estCost, recheckMs, id, winKey, margin)
  st.erpm, st.etpm = erpm, etpm
  st.rt, st.tt = st.rt + dr, st.tt + dt
  return kind, untilMs, reason, slot
end

-- When a request keeping `keep` free may start on a key the full rules let start at `t`: the time
-- and free slot, or nil (never while it keeps the share).
local function keptStart(st, now, est, estCost, recheckMs, id, winKey, margin, keep, t, slot)
  if keep <= 0 then return t, slot end
  local kind, untilMs, _, s = evaluateKept(st, now, est, estCost, recheckMs, id, winKey, margin, keep)
  if kind == 'ok' then return now, s end
  if kind == 'wait' then return untilMs, s end
  return nil, nil
end

-- A refusal reply {0, reason, retryAfterMs, version}: a class refused for capacity is noted as
-- having waited.
local function classRefused(metaKey, class, now, reply)
  if CAPACITY_REASONS[reply[2]] then
    redis.call('HSET', metaKey, 'hw:' .. class, string.format('%.0f', math.floor(now)))
  end
  return reply
end

-- An admission given (start: now, or later for a reservation): a reservation notes the class as
-- having waited; a tenant counted (contended class) gets it in its 100 ms bucket.
local function classAdmitted(metaKey, class, now, tenant, q, w, start)
  if start > now then redis.call('HSET', metaKey, 'hw:' .. class, string.format('%.0f', math.floor(now))) end
  if q then
    local e = q[tenant] or { w = w, b = {} }
    e.w = w
    local slot = tostring(math.floor(start / 100))
    e.b[slot] = (e.b[slot] or 0) + 1
    q[tenant] = e
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

-- While the class is contended (one of its requests waited in the last `horizon` ms): the
-- admissions of its tenants that started in the last `horizon` ms or start later, in 100 ms
-- buckets, and nil when `tenant` (weight w) may take one more, else the ms until its oldest
-- bucket leaves the horizon. Not contended: no counting (nil, nil).
local function tenantShare(metaKey, class, now, tenant, w, horizon)
  local v = redis.call('HMGET', metaKey, 'hw:' .. class, 'tq:' .. class)
  local waited = tonumber(v[1])
  if not waited or waited <= now - horizon then
    if v[2] then redis.call('HDEL', metaKey, 'tq:' .. class) end
    return nil, nil
  end
  local q = v[2] and cjson.decode(v[2]) or {}
  local oldest = math.floor((now - horizon) / 100) -- buckets up to this one are over
  local mine, others, W, first = 0, 0, 0, nil
  for t, e in pairs(q) do
    local n, b = 0, {}
    for slot, c in pairs(e.b) do
      local sn = tonumber(slot)
      if sn > oldest then
        b[slot] = c
        n = n + c
        if t == tenant and (first == nil or sn < first) then first = sn end
      end
    end
    if n == 0 then
      q[t] = nil
    else
      e.b = b
      if t == tenant then mine = n else others, W = others + n, W + e.w end
    end
  end
  -- one more is fine while the tenant's count per weight is not above the others' (a tenant
  -- alone always may): the least served tenant per weight always can, so nothing stalls
  if W == 0 or mine * W <= others * w then return q, nil end
  -- back soon: the others may catch up at any admission (their next reservation is not known here)
  return q, math.max(1, math.min(RETRY_SHARE_MS, math.ceil((first + 1) * 100 + horizon - now)))
end
