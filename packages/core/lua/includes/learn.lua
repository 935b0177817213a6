--[[
  Limits learnt from the provider, fleet-wide, folded into release (no round trip of its own).
  Every answer may carry `x-ratelimit-limit-*` and `-remaining-*` for requests and tokens. Per key
  the state keeps an effective limit (erpm, etpm: what acquire enforces), never above the
  configured one (rpm, tpm) nor above what the provider reports:
  - the provider reports a lower limit than configured: the effective limit drops to it at once;
    a key configured with no limit learns the reported one;
  - a 429 the pool did not expect (it admitted the request within its limits): multiplicative
    decrease, at most once per window (a burst of 429s from one cause lowers it once); not when
    the provider's own headers show room for the pool's quota and no other use (the requests only
    arrived closer together than admitted: the key cools, its limit stays); one request a window
    less when they show no other use at a quota equal to the limit (timing, or another application
    hidden by the pool's own refused requests in its log);
  - `remaining` shows the provider counting more in its window than the pool admitted (another
    application uses the key: most answers of a whole window showed it, see steadyOthers; a 429's
    own count at once) and the pool's quota per window no longer fits beside that use:
    down to what the other application leaves, at most once per window (providers that report per
    window only, `lh` = 'window', since a per-minute bucket's remaining cannot be compared with a
    window; and only from answers back within a window of their arrival, while the pool still holds
    that window's log). Lowering on every sign of other use would ratchet the limit down to its
    floor while the other application stays, leaving most of what it leaves unused;
  - answers stay clean for LEARN_HOLD_MS after the last decrease: additive increase, a twentieth of
    the ceiling per second, back up to the ceiling, while the raised quota still fits beside the
    other application's use.
  Reported limits are kept per minute (rl, tl; -1 unknown): `lh` says whether the provider reports
  the per-minute limit (OpenAI) or the per-window one (Azure: 20 for 120 RPM over 10 s).
]]
local LEARN_DOWN = 0.8
local LEARN_UP = 0.05
local LEARN_HOLD_MS = 5000
local LEARN_STEP_MS = 1000
-- requests the provider may count beyond the pool's own in one window before it is "another application"
local LEARN_SLACK = 1

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

-- The pool's quota per window of an effective limit (per minute).
local function perWindow(perMin, window)
  return math.floor(perMin * window / 60000)
end

-- One dimension: eff / cfg / rep are the state's field names (erpm, rpm, rl or etpm, tpm, tl).
-- others: what the provider counted in its window beyond the pool's own (-1 unknown; known only
-- when it reports per window, then `limit` is per window too). Returns true when the effective
-- limit went down.
local function learnDim(st, now, eff, cfg, rep, window, limit, others, limited, gentle)
  if limit > 0 then st[rep] = perMinute(st, limit, window) end
  local ceiling = ceilingOf(st[cfg], st[rep])
  if ceiling <= 0 then return false end
  local floor = math.max(1, ceiling * LEARN_UP)
  if st[eff] <= 0 or st[eff] > ceiling then
    st[eff] = ceiling
    return false
  end
  local shared = others > LEARN_SLACK and limit > 0
  local crowded = shared and perWindow(st[eff], window) + others > limit
  if (limited or crowded) and now - st.ld >= math.max(window, 1000) then
    local down = st[eff]
    if limited then
      -- gentle: one request a window less (a 429 that timing explains as well as another application)
      if gentle and window > 0 then down = st[eff] - math.max(1, math.floor(60000 / window)) else down = math.floor(st[eff] * LEARN_DOWN) end
    end
    if crowded then down = math.min(down, math.floor(perMinute(st, limit - others, window))) end
    st[eff] = math.max(floor, down)
    st.ld = now
    return true
  end
  if not limited and not crowded and st[eff] < ceiling and now - st.ld >= LEARN_HOLD_MS and now - st.li >= LEARN_STEP_MS then
    local up = math.min(ceiling, st[eff] + math.max(1, math.floor(ceiling * LEARN_UP)))
    if not shared or perWindow(up, window) + others <= limit then
      st[eff] = up
      st.li = now
    end
  end
  return false
end

--[[
  Another application's use shows in most answers of a window; the pool's own timing in a few (an
  arrival estimated a little late, a request of the pool's that reached the provider late and so
  counts in a window the pool's log has it before: bench:mixed read 2 to 4 "others" in 9 of ~900
  answers, nothing else using the keys, and lowered the keys by a tenth each time). So the use by
  others that lowers a key, or holds it down, is judged over a whole window of answers (from st.op):
  st.oc answers, st.ox of them showing others beyond the slack, st.om the least those showed. When
  the window is over, st.os (the use that counts until the next one) is st.om if at least 2 answers
  came and more than half showed others, else 0; a window followed by a gap of another window with no
  answer leaves nothing (-1). One window later than a single answer would tell it, and never from
  the pool's own stragglers. Returns st.os after this answer (others: its count, -1 unknown: then -1,
  such an answer says nothing of others).
]]
local function steadyOthers(st, now, others)
  if others < 0 then return -1 end
  local span = math.max(st.rw, 1000)
  if st.op and st.op > 0 and now - st.op >= span then
    if now - st.op >= 2 * span then
      st.os = -1
    elseif (st.oc or 0) >= 2 and 2 * (st.ox or 0) > st.oc then
      st.os = st.om
    else
      st.os = 0
    end
    st.op = nil
  end
  if not st.op or st.op <= 0 then st.op, st.oc, st.ox, st.om = now, 0, 0, -1 end
  st.oc = st.oc + 1
  if others > LEARN_SLACK then
    st.ox = st.ox + 1
    if st.om < 0 or others < st.om then st.om = others end
  end
  return st.os or -1
end

--[[
  Learn from one answer. outcome: release's outcome class; limReq, remReq, limTok, remTok: the
  headers (-1 absent); arrivedAt: about when the provider counted the request (its start); estTokens:
  what the request was admitted with. A learnt limit on a key that had none starts with its buckets
  empty (they fill at the learnt rate) and, when windowed, with this request in its windows.
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
  local others = -1
  -- an answer back later than a window after its arrival: the admissions of the window it arrived
  -- in may be trimmed already (window.lua keeps two windows), so its remaining is not compared
  if st.lh == 'window' and limReq > 0 and remReq >= 0 and st.rw > 0 and now - arrivedAt <= st.rw then
    local ours = windowCount(winKey, st, id, arrivedAt)
    if ours >= 0 then others = math.max(0, (limReq - remReq) - ours) end
  end
  local steady = steadyOthers(st, now, others)
  local hadReq, hadTok = st.erpm, st.etpm
  if limitedReq and others >= 0 and others <= LEARN_SLACK and perWindow(st.erpm, st.rw) < limReq then
    -- a 429 although the provider reports room for the pool's whole quota and nobody else's use:
    -- requests arrived closer together than they were admitted (delays between here and there).
    -- The key cools; lowering its limit would only queue callers behind a smaller quota. (Not at a
    -- quota equal to the limit: the pool's log also counts its requests the provider refused, so
    -- there another application's use can hide in that count.)
    st.rl = perMinute(st, limReq, st.rw)
  else
    -- a 429 is judged on its own count (the provider refused: whoever used the window, it was full);
    -- any other answer on the use by others that held over a whole window. A 429 at a quota equal to
    -- the limit whose count shows nobody else is as likely timing (requests sent late after a stall
    -- arrive together) as another application hidden by the pool's own refused requests in its log:
    -- one request a window less, not a fifth (bench:mixed: each such 429 cut both keys by a fifth,
    -- and the queue lost a fifth of the keys for seconds)
    local gentle = limitedReq and others >= 0 and others <= LEARN_SLACK
    learnDim(st, now, 'erpm', 'rpm', 'rl', st.rw, limReq, limitedReq and others or steady, limitedReq, gentle)
  end
  learnDim(st, now, 'etpm', 'tpm', 'tl', st.tw, limTok, -1, limitedTok)
  -- a key that had no limit logged none of its admissions in its windows: the request that taught
  -- the limit counts in them (else a learnt "1 a minute" admitted another at once)
  if hadReq <= 0 and st.erpm > 0 then
    st.rt, st.ts = 0, now
    if st.rw > 0 then redis.call('ZADD', winKey, 0, id .. '|r|' .. pad16(arrivedAt) .. '|l') end
  end
  if hadTok <= 0 and st.etpm > 0 then
    st.tt, st.ts = 0, now
    if st.tw > 0 and estTokens > 0 then
      st.wc = st.wc + estTokens
      redis.call('ZADD', winKey, 0, id .. '|t|' .. pad15(st.wc) .. '|' .. pad16(arrivedAt) .. '|l')
    end
  end
end
