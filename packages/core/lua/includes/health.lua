--[[
  Rolling health of a key, kept in its state: a latency histogram and request/error counts over
  the current and the previous window (so the view always spans one to two windows, without a
  sample per request). Each histogram is a string of little-endian uint32 counters (struct), so
  recording a latency patches four bytes instead of rebuilding a table. Bucket bounds are upper
  bounds in ms; 800 is one of them so the default degraded threshold (p99 > 800 ms) is exact.
    st.hw window start  st.hc / st.hp current / previous histogram
    st.hn, st.he / st.hpn, st.hpe requests and errors, current / previous window
    st.hq, st.ht, st.hk latency samples since the percentiles were last computed, how many the
                 histograms held then, and the window (hw) they were in (nil, or another
                 window: compute them at the next summary)
  The percentiles are computed again once the samples added since the last computation reach
  1/PCT_STALE of those it counted (at once while the histograms hold fewer than PCT_STALE; after a
  window turns over or a reset, whichever version's script did it: hk ~= hw). Unpacking both
  histograms was the largest single cost of a release (about 4 us of 23 on a busy key), and the
  value it keeps is off by less than 1/PCT_STALE in rank (the p99 kept is at worst the current
  p98.6). The error rate, degradation and health score are computed every time.
]]
local BOUNDS = { 10, 25, 50, 75, 100, 150, 200, 300, 400, 500, 650, 800, 1000, 1300, 1600, 2000,
  2500, 3200, 4000, 5000, 6500, 8000, 10000, 15000, 20000, 30000, 60000, 120000 }
local NB = #BOUNDS + 1
local PCT_STALE = 256
-- NB little-endian uint32s, and 4 x NB zero bytes: written out, as no library call can run at the top level
-- (as a Redis Functions library this runs at FUNCTION LOAD, where only `redis` exists; scripts.ts)
local HFMT = '<I4I4I4I4I4I4I4I4I4I4I4I4I4I4I4I4I4I4I4I4I4I4I4I4I4I4I4I4I4'
local EMPTY = '\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0'

local function resetHealth(st, now)
  st.hw, st.hc, st.hp, st.hn, st.he, st.hpn, st.hpe = now, EMPTY, EMPTY, 0, 0, 0, 0
  st.hq, st.ht, st.hk = nil, nil, nil
end

-- Move to a new window when the current one is over; two windows gone means no history.
local function rotateHealth(st, now, windowMs)
  if not st.hw then resetHealth(st, now) return end
  local age = now - st.hw
  if age < windowMs then return end
  if age < 2 * windowMs then
    st.hp, st.hpn, st.hpe = st.hc, st.hn, st.he
  else
    st.hp, st.hpn, st.hpe = EMPTY, 0, 0
  end
  st.hc, st.hn, st.he = EMPTY, 0, 0
  st.hw = now - (age % windowMs)
  st.hq, st.ht, st.hk = nil, nil, nil
end

local function bucketOf(ms)
  for i = 1, #BOUNDS do
    if ms <= BOUNDS[i] then return i end
  end
  return NB
end

-- Record one outcome. latency < 0: no latency sample; counted: part of the error rate.
local function recordHealth(st, now, latency, counted, isError, windowMs)
  rotateHealth(st, now, windowMs)
  if latency >= 0 then
    local off = (bucketOf(latency) - 1) * 4
    local v = struct.unpack('<I4', st.hc, off + 1)
    st.hc = string.sub(st.hc, 1, off) .. struct.pack('<I4', v + 1) .. string.sub(st.hc, off + 5)
    if st.hq then st.hq = st.hq + 1 end
  end
  if counted then
    st.hn = st.hn + 1
    if isError then st.he = st.he + 1 end
  end
end

-- p50, p99, error rate, degraded and the health score the selection uses.
local function summarizeHealth(st, opts)
  if st.hq == nil or st.hk ~= st.hw or st.hq * PCT_STALE >= st.ht then
    local c = { struct.unpack(HFMT, st.hc) }
    local p = { struct.unpack(HFMT, st.hp) }
    local total = 0
    for i = 1, NB do total = total + c[i] + p[i] end
    local function pct(q)
      if total <= 0 then return 0 end
      local target, cum = q * total, 0
      for i = 1, NB do
        local n = c[i] + p[i]
        if n > 0 and cum + n >= target then
          local lo = i == 1 and 0 or BOUNDS[i - 1]
          local hi = BOUNDS[i] or (lo * 2)
          return lo + (hi - lo) * (target - cum) / n
        end
        cum = cum + n
      end
      return BOUNDS[#BOUNDS]
    end
    st.p50, st.p99 = pct(0.5), pct(0.99)
    st.hq, st.ht, st.hk = 0, total, st.hw
  end
  local n, e = st.hn + st.hpn, st.he + st.hpe
  st.er = n > 0 and e / n or 0
  st.deg, st.hs = 0, 1
  if n >= opts.minRequests and (st.p99 > opts.p99Ms or st.er > opts.errorRate) then
    st.deg = 1
    local lf = st.p99 > opts.p99Ms and opts.p99Ms / st.p99 or 1
    local ef = st.er > opts.errorRate and opts.errorRate / st.er or 1
    st.hs = math.max(0.02, opts.degradedScore * math.min(lf, ef))
  end
end

--[[
  The breaker and health settings a release is given (ARGV[7..16]: failures, errorRate,
  minRequests, cooldownMs, maxCooldownMs, then windowMs, p99Ms, errorRate, minRequests,
  degradedScore) are its pool's, the same strings call after call: made into tables once and kept in
  the library's memory (as the kept states are), reused while the ten strings are the same (another
  pool's settings are parsed again). Callers only read the tables. Parsing them at every release cost
  about 2 us of its 23.
]]
-- The health settings as scripts are given them, five from argv[i]: windowMs, p99Ms, errorRate,
-- minRequests, degradedScore (release, probe, housekeepKeys).
local function healthSettings(argv, i)
  return {
    windowMs = tonumber(argv[i]), p99Ms = tonumber(argv[i + 1]), errorRate = tonumber(argv[i + 2]),
    minRequests = tonumber(argv[i + 3]), degradedScore = tonumber(argv[i + 4]),
  }
end

local settingsArgs, settingsBrk, settingsHealth = {}, nil, nil
local function releaseSettings(argv)
  if settingsBrk then
    local same = true
    for i = 7, 16 do
      if settingsArgs[i] ~= argv[i] then
        same = false
        break
      end
    end
    if same then return settingsBrk, settingsHealth end
  end
  settingsBrk = {
    failures = tonumber(argv[7]), errorRate = tonumber(argv[8]), minRequests = tonumber(argv[9]),
    cooldownMs = tonumber(argv[10]), maxCooldownMs = tonumber(argv[11]),
  }
  settingsHealth = healthSettings(argv, 12)
  for i = 7, 16 do settingsArgs[i] = argv[i] end
  return settingsBrk, settingsHealth
end
