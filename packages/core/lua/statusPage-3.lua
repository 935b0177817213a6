--[[
  Read-only view of a page of the pool's keys (the caller reads their ids from cfg with HSCAN and
  passes a few dozen at a time; the call stops once it has run ARGV[1] microseconds and says how
  many it did, so no call grows with the pool or with what a key holds), computed with the same rules acquire
  uses (refill, budget period, breaker) so status never disagrees with selection. O(ids x
  log(window entries)). Leases past their deadline are not subtracted here: the caller reads
  them (ZRANGEBYSCORE, in pages) and takes from `inf` those with a sequence above the key's `cs`.

  A windowed key also reports its enforcement windows (see includes/window.lua): what a window
  holds (margin excluded), what was admitted in the one ending now, and what is reserved to start
  later (reservations given back, now free slots, excluded).

  KEYS[1] cfg  KEYS[2] st  KEYS[3] win
  ARGV[1] time budget, us (at least one id is done)  ARGV[2..] key ids (one no longer in cfg is skipped)
  Reply: JSON {now, done, keys: [{id, cfg, st, state, periodEnd, win?}]}: done = ids handled
  state: active | cooling | open | half_open | revoked | disabled | draining | out_of_budget
  win: {rq, ru, ra, tq, tu}: requests per window, admitted in the window ending now, reserved
  ahead; tokens per window, admitted (rq or tq 0: that dimension is not windowed)
]]
--- @include "common"

local cfgKey, stKey, winKey = KEYS[1], KEYS[2], KEYS[3]
local now = nowMs()
local budget = tonumber(ARGV[1])
local keys = {}
local done = 0
for i = 2, #ARGV do
  local id = ARGV[i]
  local raw = redis.call('HGET', cfgKey, id)
  if raw then
    local cfg = cjson.decode(raw)
    local st = loadState(stKey, id) or newState(cfg, now)
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
    -- binary histograms are not JSON: the summary fields carry what they say (hq, ht, hk: when to compute
    -- them again, health.lua); free slots are in win
    st.hc, st.hp, st.fs, st.hq, st.ht, st.hk = nil, nil, nil, nil, nil, nil
    keys[#keys + 1] = { id = id, cfg = cfg, st = st, state = state, periodEnd = pend, win = win }
  end
  done = done + 1
  if overBudget(now, budget) then break end
end
return cjson.encode({ now = now, done = done, keys = keys })
