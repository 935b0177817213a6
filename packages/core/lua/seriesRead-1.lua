--[[
  Read the traffic counters (includes/series.lua) of a range of seconds or of ten-second buckets,
  stopping once ARGV[2] microseconds have gone (at least one is done), so that no call grows with
  the range, the tenants or the keys; the caller goes on from where it stopped.

  KEYS[1] ser
  ARGV[1] 'p': pool-wide seconds | 'k': per-key ten-second buckets  ARGV[2] time budget, us
  ARGV[3] first second (or bucket)  ARGV[4] last one (inclusive)
  Reply: JSON {now, done, rows}: done = seconds (buckets) handled; rows: those that hold counts:
    'p': [second, upstream429, then per class critical, normal, low: a, w, r, ms, h1..h12,
          then per tenant: name, a, w, r, ms]
    'k': [bucket, then per key: id, requests, 429s]
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
    local p = tostring(x % SER_SLOTS) .. ':'
    if redis.call('HGET', serKey, p .. 't') == tostring(x) then
      local names = { p .. '429' }
      for _, f in ipairs(fixed) do names[#names + 1] = p .. f end
      local vals = redis.call('HMGET', serKey, unpack(names))
      local row = { x }
      for i = 1, #vals do row[#row + 1] = tonumber(vals[i]) or 0 end
      local tenants = redis.call('HGET', serKey, p .. 'u')
      if tenants then
        for tn in string.gmatch(tenants, '[^\n]+') do
          local q = p .. 'u:' .. tn .. ':'
          local v = redis.call('HMGET', serKey, q .. 'a', q .. 'w', q .. 'r', q .. 'ms')
          row[#row + 1] = tn
          for i = 1, 4 do row[#row + 1] = tonumber(v[i]) or 0 end
        end
      end
      rows[#rows + 1] = row
    end
  else
    local p = 'k' .. tostring(x % SER_KSLOTS) .. ':'
    if redis.call('HGET', serKey, p .. 't') == tostring(x) then
      local ids = redis.call('HGET', serKey, p .. 'ids')
      local row = { x }
      if ids then
        local list = {}
        for kid in string.gmatch(ids, '[^\n]+') do list[#list + 1] = kid end
        for i = 1, #list, 200 do
          local names = {}
          for j = i, math.min(#list, i + 199) do
            names[#names + 1], names[#names + 2] = p .. list[j] .. ':n', p .. list[j] .. ':e'
          end
          local v = redis.call('HMGET', serKey, unpack(names))
          for j = i, math.min(#list, i + 199) do
            local o = (j - i) * 2
            row[#row + 1], row[#row + 2], row[#row + 3] = list[j], tonumber(v[o + 1]) or 0, tonumber(v[o + 2]) or 0
          end
        end
      end
      rows[#rows + 1] = row
    end
  end
  done = done + 1
  if overBudget(start, budget) then break end
end
return cjson.encode({ now = nowMs(), done = done, rows = rows })
