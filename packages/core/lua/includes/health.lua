--[[
  Rolling health of a key: a latency histogram and request/error counts over the current and the
  previous window (so the view always spans one to two windows, without a sample per request).
  Latency buckets are upper bounds in ms; 800 is one of them so the default degraded threshold
  (p99 > 800 ms) is judged exactly.
]]
local BOUNDS = { 10, 25, 50, 75, 100, 150, 200, 300, 400, 500, 650, 800, 1000, 1300, 1600, 2000,
  2500, 3200, 4000, 5000, 6500, 8000, 10000, 15000, 20000, 30000, 60000, 120000 }

local function emptyHist()
  local c = {}
  for i = 1, #BOUNDS + 1 do c[i] = 0 end
  return c
end

local function loadHealth(hlKey, id, now)
  local raw = redis.call('HGET', hlKey, id)
  if raw then return cmsgpack.unpack(raw) end
  return { ws = now, c = emptyHist(), n = 0, e = 0, pc = emptyHist(), pn = 0, pe = 0 }
end

-- Move to a new window when the current one is over; two windows gone means no history.
local function rotateHealth(h, now, windowMs)
  local age = now - h.ws
  if age < windowMs then return end
  if age < 2 * windowMs then
    h.pc, h.pn, h.pe = h.c, h.n, h.e
  else
    h.pc, h.pn, h.pe = emptyHist(), 0, 0
  end
  h.c, h.n, h.e = emptyHist(), 0, 0
  h.ws = now - (age % windowMs)
end

local function bucketOf(ms)
  for i = 1, #BOUNDS do
    if ms <= BOUNDS[i] then return i end
  end
  return #BOUNDS + 1
end

local function percentile(h, total, q)
  if total <= 0 then return 0 end
  local target = q * total
  local cum = 0
  for i = 1, #BOUNDS + 1 do
    local n = h.c[i] + h.pc[i]
    if n > 0 and cum + n >= target then
      local lo = i == 1 and 0 or BOUNDS[i - 1]
      local hi = BOUNDS[i] or (lo * 2)
      return lo + (hi - lo) * (target - cum) / n
    end
    cum = cum + n
  end
  return BOUNDS[#BOUNDS]
end

-- Record one outcome and return the summary the selection uses.
-- h: health record; latency < 0 means no latency sample; isError counts toward the error rate.
local function recordHealth(h, now, latency, counted, isError, opts)
  rotateHealth(h, now, opts.windowMs)
  if latency >= 0 then
    local b = bucketOf(latency)
    h.c[b] = h.c[b] + 1
  end
  if counted then
    h.n = h.n + 1
    if isError then h.e = h.e + 1 end
  end
end

local function summarizeHealth(h, opts)
  local samples = 0
  for i = 1, #BOUNDS + 1 do samples = samples + h.c[i] + h.pc[i] end
  local n, e = h.n + h.pn, h.e + h.pe
  local er = n > 0 and e / n or 0
  local p50 = percentile(h, samples, 0.5)
  local p99 = percentile(h, samples, 0.99)
  local deg = 0
  local hs = 1
  if n >= opts.minRequests and (p99 > opts.p99Ms or er > opts.errorRate) then
    deg = 1
    local lf = p99 > opts.p99Ms and opts.p99Ms / p99 or 1
    local ef = er > opts.errorRate and opts.errorRate / er or 1
    hs = math.max(0.02, opts.degradedScore * math.min(lf, ef))
  end
  return { n = n, e = e, er = er, p50 = p50, p99 = p99, deg = deg, hs = hs }
end
