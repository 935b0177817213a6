--[[
  Traffic counters of the last 16 minutes (the dashboard's charts, the per-class and per-tenant
  figures of status), written by acquire and release where a request's outcome is known, in one
  hash of the pool (`ser`, passed in KEYS by both scripts): no extra call, one HINCRBY for most
  requests. Read back in small steps by seriesRead-1.lua.

  Pool-wide: a ring of SER_SLOTS one-second slots, slot s = second % SER_SLOTS. Every counter
  stamps itself: its value is stamp * 2^31 + count, stamp = second % 2^21, so one HINCRBY both
  counts and tells a counter left by an older second (then it is set to this second's count: no
  slot is ever cleared in bulk, and the hash stays bounded). Fields of slot s:
    s:<class>:a|w|r     per class (critical normal low): admitted now, admitted by a reservation
                        (waited), refused
    s:<class>:ms        sum of the reserved waits, ms
    s:<class>:h<i>      reserved waits per bucket: i = 1..#SER_BOUNDS for wait <= SER_BOUNDS[i] ms,
                        #SER_BOUNDS + 1 beyond (an admission now is a wait of 0: counted in :a)
    s:429               upstream 429s (release with outcome rate_limited)
    s:u                 "<stamp>\n<tenant>\n...": the tenants counted in the second (at most
                        SER_TENANTS, the others count as '~'); when a second takes the slot over,
                        the fields of the tenants listed for the older one are deleted
    s:u:<tenant>:a|w|r|ms  the tenant's admitted, waited, refused, reserved wait ms
  Per key, ten-second buckets (b = floor(second / 10)): the current one in the key's state (sb, sn,
  se: see seriesRelease), the finished ones in a ring of SER_KSLOTS fields per key:
    k<b % SER_KSLOTS>:<keyId>  "<b>:<requests that went upstream>:<429s among them>"
]]

local SER_SLOTS = 960
local SER_KSLOTS = 96
local SER_TENANTS = 32
local SER_SHIFT = 2147483648 -- 2^31
local SER_STAMPS = 2097152 -- 2^21
local SER_BOUNDS = { 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000 }
local SER_CLASSES = { critical = true, normal = true, low = true }

-- A counter's value as of second stamp `stamp`: its count, or 0 when an older second left it.
local function serCount(v, stamp)
  v = tonumber(v)
  if not v or math.floor(v / SER_SHIFT) ~= stamp then return 0 end
  return v % SER_SHIFT
end

-- Add `n` to counter `f` of second stamp `stamp`; true when it was an older second's (now reset).
local function serAdd(serKey, f, stamp, n)
  local v = redis.call('HINCRBY', serKey, f, n)
  if math.floor(v / SER_SHIFT) == stamp then return false end
  redis.call('HSET', serKey, f, string.format('%.0f', stamp * SER_SHIFT + n))
  return true
end

-- The bucket of a reserved wait of `ms`.
local function serBucket(ms)
  for i, b in ipairs(SER_BOUNDS) do
    if ms <= b then return i end
  end
  return #SER_BOUNDS + 1
end

-- Add `n` to a tenant's counter `what` (a, w, r, ms) in slot prefix `p`; the first count of a
-- tenant in a second lists it (and a second taking the slot over deletes the older one's tenants).
local function serTenant(serKey, p, stamp, tenant, what, n)
  local f = p .. 'u:' .. tenant .. ':' .. what
  local v = redis.call('HINCRBY', serKey, f, n)
  if math.floor(v / SER_SHIFT) == stamp then return end
  local list = redis.call('HGET', serKey, p .. 'u') or ''
  local listStamp = tonumber(string.match(list, '^(%d+)\n'))
  if listStamp ~= stamp then
    local old = {}
    for tn in string.gmatch(string.gsub(list, '^%d+\n', ''), '[^\n]+') do
      local q = p .. 'u:' .. tn .. ':'
      for _, x in ipairs({ 'a', 'w', 'r', 'ms' }) do
        if q .. x ~= f then old[#old + 1] = q .. x end
      end
    end
    for i = 1, #old, 400 do redis.call('HDEL', serKey, unpack(old, i, math.min(#old, i + 399))) end
    list = tostring(stamp) .. '\n'
  end
  if not string.find(list, '\n' .. tenant .. '\n', 1, true) then
    local _, listed = string.gsub(list, '\n', '')
    if listed - 1 >= SER_TENANTS and tenant ~= '~' then
      redis.call('HDEL', serKey, f)
      if listStamp ~= stamp then redis.call('HSET', serKey, p .. 'u', list) end
      return serTenant(serKey, p, stamp, '~', what, n)
    end
    list = list .. tenant .. '\n'
    redis.call('HSET', serKey, p .. 'u', list)
  end
  redis.call('HSET', serKey, f, string.format('%.0f', stamp * SER_SHIFT + n))
end

--[[
  Count one acquire outcome of class `class` for `tenant` ('' = none) at `now` (ms):
  outcome 'a' admitted now, 'w' admitted by a reservation starting `waitMs` later, 'r' refused.
]]
local function seriesAcquire(serKey, now, class, tenant, outcome, waitMs)
  local sec = math.floor(now / 1000)
  local stamp = sec % SER_STAMPS
  local p = tostring(sec % SER_SLOTS) .. ':'
  if not SER_CLASSES[class] then class = 'normal' end
  local q = p .. class .. ':'
  serAdd(serKey, q .. outcome, stamp, 1)
  if outcome == 'w' then
    waitMs = math.ceil(waitMs)
    serAdd(serKey, q .. 'ms', stamp, waitMs)
    serAdd(serKey, q .. 'h' .. serBucket(waitMs), stamp, 1)
  end
  if tenant and tenant ~= '' then
    tenant = string.gsub(tenant, '\n', ' ')
    serTenant(serKey, p, stamp, tenant, outcome, 1)
    if outcome == 'w' then serTenant(serKey, p, stamp, tenant, 'ms', waitMs) end
  end
end

--[[
  Count a request of key `id` that went upstream at `now` (ms), `is429`: the provider said 429.
  Per key, the counts of the current ten-second bucket live in the key's state (st.sb bucket, st.sn
  requests, st.se 429s: saved with it, no command); when a later bucket begins, the finished one is
  written once to `k<bucket % SER_KSLOTS>:<id>` = "<bucket>:<requests>:<429s>" (overwritten when
  the ring comes round). The reader takes the current bucket from the state (statusPage).
]]
local function seriesRelease(serKey, now, st, id, is429)
  local sec = math.floor(now / 1000)
  if is429 then
    serAdd(serKey, tostring(sec % SER_SLOTS) .. ':429', sec % SER_STAMPS, 1)
  end
  local b = math.floor(sec / 10)
  if st.sb ~= b then
    if st.sb and (st.sn or 0) > 0 then
      redis.call('HSET', serKey, 'k' .. tostring(st.sb % SER_KSLOTS) .. ':' .. id, tostring(st.sb) .. ':' .. tostring(st.sn) .. ':' .. tostring(st.se))
    end
    st.sb, st.sn, st.se = b, 0, 0
  end
  st.sn = st.sn + 1
  if is429 then st.se = st.se + 1 end
end
