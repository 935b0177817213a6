--[[
  Traffic counters of the last 16 minutes (the dashboard's charts, the per-class and per-tenant
  figures of status), written by acquire and release where a request's outcome is known, in one
  hash of the pool (`ser`, passed in KEYS by both scripts): no extra call, a few HINCRBY each.
  Read back in small steps by seriesRead-1.lua.

  Pool-wide: a ring of SER_SLOTS one-second slots, slot s = second % SER_SLOTS. Fields:
    s:t                 the second (Unix) the slot counts; a writer that finds an older one clears
                        the slot first (so a slot never mixes two seconds, and the hash stays bounded)
    s:<class>:a|w|r     per class (critical normal low): admitted now, admitted by a reservation
                        (waited), refused
    s:<class>:ms        sum of the reserved waits, ms
    s:<class>:h<i>      reserved waits per bucket: i = 1..#SER_BOUNDS for wait <= SER_BOUNDS[i] ms,
                        #SER_BOUNDS + 1 beyond (an admission now is a wait of 0: counted in :a)
    s:429               upstream 429s (release with outcome rate_limited)
    s:u                 the tenants counted in the second, newline-separated (at most SER_TENANTS:
                        the others count as '~')
    s:u:<tenant>        marker (1) of a tenant counted in the second
    s:u:<tenant>:a|w|r|ms  its admitted, waited, refused, reserved wait ms
  Per key: a ring of SER_KSLOTS ten-second slots, slot j = floor(second / 10) % SER_KSLOTS:
    kj:t                the ten-second bucket (floor(second / 10)) the slot counts
    kj:ids              the keys counted in it, newline-separated (at most SER_KEYS: others as '~')
    kj:<keyId>:n        requests released (that went upstream)  kj:<keyId>:e  429s among them
]]

local SER_SLOTS = 960
local SER_KSLOTS = 96
local SER_TENANTS = 32
local SER_KEYS = 2000
local SER_BOUNDS = { 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000 }
local SER_CLASSES = { critical = true, normal = true, low = true }

-- HDEL in chunks (unpack has a limit on the number of values)
local function serDel(serKey, fields)
  for i = 1, #fields, 500 do
    redis.call('HDEL', serKey, unpack(fields, i, math.min(#fields, i + 499)))
  end
end

-- The slot of second `sec`, cleared first when it holds an older second: its field prefix.
local function serSlot(serKey, sec)
  local p = tostring(sec % SER_SLOTS) .. ':'
  local secStr = tostring(sec)
  local t = redis.call('HGET', serKey, p .. 't')
  if t ~= secStr then
    if t then
      local old = { p .. '429', p .. 'u', p .. 'un' }
      for c in pairs(SER_CLASSES) do
        local q = p .. c .. ':'
        old[#old + 1], old[#old + 2], old[#old + 3], old[#old + 4] = q .. 'a', q .. 'w', q .. 'r', q .. 'ms'
        for i = 1, #SER_BOUNDS + 1 do old[#old + 1] = q .. 'h' .. i end
      end
      local tenants = redis.call('HGET', serKey, p .. 'u')
      if tenants then
        for tn in string.gmatch(tenants, '[^\n]+') do
          local q = p .. 'u:' .. tn
          old[#old + 1], old[#old + 2], old[#old + 3], old[#old + 4], old[#old + 5] = q, q .. ':a', q .. ':w', q .. ':r', q .. ':ms'
        end
      end
      serDel(serKey, old)
    end
    redis.call('HSET', serKey, p .. 't', secStr)
  end
  return p
end

-- The bucket of a reserved wait of `ms`.
local function serBucket(ms)
  for i, b in ipairs(SER_BOUNDS) do
    if ms <= b then return i end
  end
  return #SER_BOUNDS + 1
end

--[[
  Count one acquire outcome of class `class` for `tenant` ('' = none) at `now` (ms):
  outcome 'a' admitted now, 'w' admitted by a reservation starting `waitMs` later, 'r' refused.
]]
local function seriesAcquire(serKey, now, class, tenant, outcome, waitMs)
  local p = serSlot(serKey, math.floor(now / 1000))
  if not SER_CLASSES[class] then class = 'normal' end
  local q = p .. class .. ':'
  redis.call('HINCRBY', serKey, q .. outcome, 1)
  if outcome == 'w' then
    waitMs = math.ceil(waitMs)
    redis.call('HINCRBY', serKey, q .. 'ms', waitMs)
    redis.call('HINCRBY', serKey, q .. 'h' .. serBucket(waitMs), 1)
  end
  if tenant and tenant ~= '' then
    tenant = string.gsub(tenant, '\n', ' ')
    if redis.call('HSETNX', serKey, p .. 'u:' .. tenant, '1') == 1 then
      if redis.call('HINCRBY', serKey, p .. 'un', 1) > SER_TENANTS then
        redis.call('HDEL', serKey, p .. 'u:' .. tenant)
        tenant = '~'
        if redis.call('HSETNX', serKey, p .. 'u:~', '1') == 1 then
          local list = redis.call('HGET', serKey, p .. 'u')
          redis.call('HSET', serKey, p .. 'u', list and (list .. '\n~') or '~')
        end
      else
        local list = redis.call('HGET', serKey, p .. 'u')
        redis.call('HSET', serKey, p .. 'u', list and (list .. '\n' .. tenant) or tenant)
      end
    end
    local u = p .. 'u:' .. tenant .. ':'
    redis.call('HINCRBY', serKey, u .. outcome, 1)
    if outcome == 'w' then redis.call('HINCRBY', serKey, u .. 'ms', waitMs) end
  end
end

-- Count a request of key `id` that went upstream, at `now` (ms); `is429`: the provider said 429.
local function seriesRelease(serKey, now, id, is429)
  local sec = math.floor(now / 1000)
  if is429 then
    redis.call('HINCRBY', serKey, serSlot(serKey, sec) .. '429', 1)
  end
  local b = math.floor(sec / 10)
  local p = 'k' .. tostring(b % SER_KSLOTS) .. ':'
  local bStr = tostring(b)
  local t = redis.call('HGET', serKey, p .. 't')
  if t ~= bStr then
    if t then
      local ids = redis.call('HGET', serKey, p .. 'ids')
      local old = { p .. 'ids', p .. 'kn' }
      if ids then
        for kid in string.gmatch(ids, '[^\n]+') do
          old[#old + 1], old[#old + 2] = p .. kid .. ':n', p .. kid .. ':e'
        end
      end
      serDel(serKey, old)
    end
    redis.call('HSET', serKey, p .. 't', bStr)
  end
  local n = redis.call('HINCRBY', serKey, p .. id .. ':n', 1)
  if n == 1 then
    if redis.call('HINCRBY', serKey, p .. 'kn', 1) > SER_KEYS then
      redis.call('HDEL', serKey, p .. id .. ':n')
      id = '~'
      if redis.call('HINCRBY', serKey, p .. id .. ':n', 1) == 1 then n = 1 else n = 2 end
    end
    if n == 1 then
      local list = redis.call('HGET', serKey, p .. 'ids')
      redis.call('HSET', serKey, p .. 'ids', list and (list .. '\n' .. id) or id)
    end
  end
  if is429 then redis.call('HINCRBY', serKey, p .. id .. ':e', 1) end
end
