--[[
  Read-only view of every key of the pool, computed with the same rules acquire uses (refill,
  budget period, breaker) so status never disagrees with selection. O(keys x log(window entries)
  + expired leases): for operators only. Leases past their deadline (their holder died) are not
  counted in flight, though only acquire and housekeep give them back: status reads, it never reaps.

  A windowed key also reports its enforcement windows (see includes/window.lua): what a window
  holds (margin excluded), what was admitted in the one ending now, and what is reserved to start
  later (reservations given back, now free slots, excluded).

  KEYS[1] cfg  KEYS[2] st  KEYS[3] leases  KEYS[4] meta  KEYS[5] spend  KEYS[6] win
  ARGV: none
  Reply: JSON {now, version, leases, spend: [field, value, ...], keys: [{id, cfg, st, state, periodEnd, win?}]}
  state: active | cooling | open | half_open | revoked | disabled | draining | out_of_budget
  win: {rq, ru, ra, tq, tu}: requests per window, admitted in the window ending now, reserved
  ahead; tokens per window, admitted (rq or tq 0: that dimension is not windowed)
]]
--- @include "common"

local cfgKey, stKey, leasesKey, metaKey, spendKey, winKey = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local now = nowMs()
local all = redis.call('HGETALL', cfgKey)
local keys = {}
-- expired leases not reaped yet, per key (those of a removed key's earlier life do not count)
local expired = {}
local nowStr = tostring(math.floor(now))
for _, lease in ipairs(redis.call('ZRANGEBYSCORE', leasesKey, '-inf', nowStr)) do
  local seq, id = parseLease(lease)
  if id then expired[id] = expired[id] or {} table.insert(expired[id], seq) end
end
for i = 1, #all, 2 do
  local id, cfg = all[i], cjson.decode(all[i + 1])
  local st = loadState(stKey, id) or newState(cfg, now)
  for _, seq in ipairs(expired[id] or {}) do
    if seq > st.cs then st.inf = math.max(0, st.inf - 1) end
  end
  refill(st, now)
  local pend = rollBudget(st, now)
  local state = 'active'
  if st.adm ~= 'active' then
    state = st.adm
  elseif st.br == 'open' and now < st.bu then
    state = 'open'
  elseif st.br ~= 'closed' then
    state = 'half_open'
  elseif st.bud >= 0 and (st.sp + st.rs >= st.bud or st.wr == 'budget') then
    -- spent, or the last request it was asked for did not fit in what is left
    state = 'out_of_budget'
  elseif st.cu > now then
    state = 'cooling'
  end
  local win = nil
  local rq, tq = reqQuota(st, 0), tokQuota(st, 0)
  if rq > 0 or tq > 0 then
    win = { rq = rq, ru = 0, ra = 0, tq = tq, tu = 0 }
    if rq > 0 then
      win.ru = windowCount(winKey, st, id, now)
      local free = 0
      for _, f in ipairs(st.fs or {}) do
        if f[1] > now then free = free + 1 end
      end
      win.ra = math.max(0, windowAhead(winKey, id, now) - free)
    end
    if tq > 0 then win.tu = windowTokens(winKey, st, id, now) end
  end
  -- binary histograms are not JSON: the summary fields carry what they say; free slots are in win
  st.hc, st.hp, st.fs = nil, nil, nil
  keys[#keys + 1] = { id = id, cfg = cfg, st = st, state = state, periodEnd = pend, win = win }
end
return cjson.encode({
  now = now,
  version = tonumber(redis.call('HGET', metaKey, 'v') or '0'),
  leases = redis.call('ZCOUNT', leasesKey, '(' .. nowStr, '+inf'),
  spend = redis.call('HGETALL', spendKey),
  keys = keys,
})
