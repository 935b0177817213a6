--[[
  Limits learnt from the provider, fleet-wide, folded into release (no round trip of its own).
  Every answer may carry `x-ratelimit-limit-*` and `-remaining-*` for requests and tokens. Per key
  the state keeps an effective limit (erpm, etpm: what acquire enforces), never above the
  configured one (rpm, tpm) nor above what the provider reports:
  - the provider reports a lower limit than configured: the effective limit drops to it at once;
    a key configured with no limit learns the reported one;
  - a 429 the pool did not expect (it admitted the request within its limits): multiplicative
    decrease, at most once per window (a burst of 429s from one cause lowers it once);
  - `remaining` shows the provider counting more in its window than the pool admitted (another
    application uses the key), so much that the pool's own quota no longer fits beside it:
    multiplicative decrease, at most once per window (providers that report per window only,
    `lh` = 'window', since a per-minute bucket's remaining cannot be compared with a window);
  - answers stay clean for LEARN_HOLD_MS after the last decrease: additive increase, a twentieth of
    the ceiling per second, back up to the ceiling.
  Reported limits are kept per minute (rl, tl; -1 unknown): `lh` says whether the provider reports
  the per-minute limit (OpenAI) or the per-window one (Azure: 20 for 120 RPM over 10 s).
]]
local LEARN_DOWN = 0.8
local LEARN_UP = 0.05
local LEARN_HOLD_MS = 5000
local LEARN_STEP_MS = 1000
-- requests the provider may count beyond the pool's own in one window before it is "another application"
local LEARN_SLACK = 1
-- the pool's own requests are counted over its window widened by this much each side: a request
-- reaches the provider a little after its admission, and a burst near the window's edge must not
-- look like someone else's
local LEARN_SKEW_MS = 50

-- A reported limit as requests (tokens) per minute.
local function perMinute(st, v, window)
  if st.lh == 'window' and window > 0 then return v * 60000 / window end
  return v
end

-- The most this dimension may be raised to: configured, and what the provider reports.
local function ceilingOf(configured, reported)
  if configured > 0 and reported > 0 then return math.min(configured, reported) end
  if configured > 0 then return configured end
  return math.max(reported, 0)
end

-- One dimension: eff / cfg / rep are the state's field names (erpm, rpm, rl or etpm, tpm, tl).
-- Returns true when the effective limit went down.
local function learnDim(st, now, eff, cfg, rep, window, limit, otherUse, limited)
  if limit > 0 then st[rep] = perMinute(st, limit, window) end
  local ceiling = ceilingOf(st[cfg], st[rep])
  if ceiling <= 0 then return false end
  local floor = math.max(1, ceiling * LEARN_UP)
  if st[eff] <= 0 or st[eff] > ceiling then
    st[eff] = ceiling
    return false
  end
  if (limited or otherUse) and now - st.ld >= math.max(window, 1000) then
    st[eff] = math.max(floor, math.floor(st[eff] * LEARN_DOWN))
    st.ld = now
    return true
  end
  if not limited and not otherUse and st[eff] < ceiling and now - st.ld >= LEARN_HOLD_MS and now - st.li >= LEARN_STEP_MS then
    st[eff] = math.min(ceiling, st[eff] + math.max(1, math.floor(ceiling * LEARN_UP)))
    st.li = now
  end
  return false
end

--[[
  Learn from one answer. outcome: release's outcome class; limReq, remReq, limTok, remTok: the
  headers (-1 absent); arrivedAt: about when the provider counted the request (its start); estTokens:
  what the request was admitted with. A learnt limit on a key that had none starts with its buckets
  empty (they fill at the learnt rate).
]]
local function learnLimits(winKey, st, id, now, outcome, limReq, remReq, limTok, remTok, arrivedAt, estTokens)
  if outcome ~= 'ok' and outcome ~= 'client_error' and outcome ~= 'rate_limited' then return end
  local limited = outcome == 'rate_limited'
  local limitedReq, limitedTok = limited, false
  if limited and remReq >= 0 and remTok >= 0 then
    -- the headers say which limit ran out
    limitedReq = remReq <= 0
    limitedTok = remTok < math.max(1, estTokens)
    if not limitedReq and not limitedTok then limitedReq = true end
  elseif limited and st.erpm <= 0 and st.etpm > 0 then
    limitedReq, limitedTok = false, true
  end
  local otherUse = false
  if st.lh == 'window' and limReq > 0 and remReq >= 0 and st.rw > 0 and st.erpm > 0 then
    local ours = windowCount(winKey, st, id, arrivedAt, LEARN_SKEW_MS)
    local other = (limReq - remReq) - ours
    -- someone else uses the key, and the pool's whole quota would not fit beside them
    otherUse = other > LEARN_SLACK and math.floor(st.erpm * st.rw / 60000) + other > limReq
  end
  local hadReq, hadTok = st.erpm, st.etpm
  learnDim(st, now, 'erpm', 'rpm', 'rl', st.rw, limReq, otherUse, limitedReq)
  learnDim(st, now, 'etpm', 'tpm', 'tl', st.tw, limTok, false, limitedTok)
  if hadReq <= 0 and st.erpm > 0 then st.rt, st.ts = 0, now end
  if hadTok <= 0 and st.etpm > 0 then st.tt, st.ts = 0, now end
end
