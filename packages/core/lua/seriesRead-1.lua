--[[
  Read the pool-wide traffic counters (includes/series.lua) of a range of seconds, stopping once
  ARGV[2] microseconds have gone (at least one second is done), so that no call grows with the
  range or the tenants; the caller goes on from where it stopped. (The per-key buckets are plain
  fields: the caller reads them with HMGET, a page of keys at a time.)

  KEYS[1] ser
  ARGV[1] 'p' (pool-wide seconds)  ARGV[2] time budget, us  ARGV[3] first second  ARGV[4] last one
  (inclusive)
  Reply: JSON {now, done, rows}: done = seconds handled; rows: those that hold counts:
    [second, upstream429, then per class critical, normal, low: a, w, r, ms, h1..h12,
     then per tenant: name, a, w, r, ms]
]]
--- @include "common"
--- @include "series"

local serKey = KEYS[1]
local start = nowMs()
local kind, budget, first, last = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local CLASS_ORDER = { 'critical', 'normal', 'low' }
local fixed = {}
for _, c in ipairs(CLASS_ORDER) do
  fixed[#fixed + 1], fixed[#fixed + 2], fixed[#fixed + 3], fixed[#fixed + 4] = c .. ':a', c .. ':w', c .. ':r', c .. ':ms'
  for i = 1, #SER_BOUNDS + 1 do fixed[#fixed + 1] = c .. ':h' .. i end
end

local rows, done = {}, 0
for x = first, last do
  if kind == 'p' then
    local stamp = x % SER_STAMPS
    local p = tostring(x % SER_SLOTS) .. ':'
    local names = { p .. '429' }
    for _, f in ipairs(fixed) do names[#names + 1] = p .. f end
    local vals = redis.call('HMGET', serKey, unpack(names))
    local row = { x }
    local any = false
    for i = 1, #vals do
      local n = serCount(vals[i], stamp)
      if n > 0 then any = true end
      row[#row + 1] = n
    end
    local list = redis.call('HGET', serKey, p .. 'u')
    if list and tonumber(string.match(list, '^(%d+)\n')) == stamp then
      for tn in string.gmatch(string.gsub(list, '^%d+\n', ''), '[^\n]+') do
        local q = p .. 'u:' .. tn .. ':'
        local v = redis.call('HMGET', serKey, q .. 'a', q .. 'w', q .. 'r', q .. 'ms')
        row[#row + 1] = tn
        for i = 1, 4 do row[#row + 1] = serCount(v[i], stamp) end
        any = true
      end
    end
    if any then rows[#rows + 1] = row end
  end
  done = done + 1
  if overBudget(start, budget) then break end
end
return cjson.encode({ now = nowMs(), done = done, rows = rows })
