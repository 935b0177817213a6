--[[
  Enforcement windows: a key whose provider counts requests (or tokens) over a short rolling window
  (OpenAI's and Azure's quantized limits: "600 RPM" is at most 10 requests in any rolling second)
  admits at most N = floor(rpm x W / 60) requests, and T = floor(tpm x W / 60) tokens, in any rolling
  window of W + margin ms (the margin absorbs the skew between admission here and arrival upstream;
  a request sent more than WINDOW_SENT_LATE_MS late counts from its send, windowSent).
  When rpm x W / 60 < 1 the window stretches to one request per 60 / rpm s.

  The log of admissions lives in one pool-wide sorted set (KEYS: `win`), all scores 0, ordered by
  member (lexicographic), so a script reaches one key's entries with BYLEX ranges and every Redis key
  it touches is still one it was given:
    <id>|r|<start, us, 16 digits>|<slot>                        one per admitted request
    <id>|t|<tokens so far, 15 digits>|<start, us>|<slot>        one per admitted request with tokens
    <id>|c|<class>|<start, us>|<slot>                         one per admission of a class that keeps a
                                                              share (classes.lua: its own count; trimmed
                                                              to the window at each look and admission)
  Admissions are appended in time order (a new one never starts before the key's last, st.wl), so
  "the N-th most recent admission + W" is exactly when one more fits (a request sent late moves its
  entry to when it was sent, windowSent: entries stay ordered by time, members sort by start), and
  the token entries' running sums (st.wc) make "when do `est` more tokens fit" one range lookup. Request entries older than
  the window (two windows for a provider that reports per window, for learning; token entries:
  than the window) are trimmed when the key is next looked at.
  Cost: O(log entries) per key examined.

  Reservations ("start at T"): a request admitted at a future time holds its entries like any other.
  A reservation given back before it starts (its caller gave up) leaves a free slot (st.fs: start,
  tokens, slot): the next request that fits it takes it over, entries untouched, so the provider
  sees exactly what the log counted. A free slot whose time has passed is dropped (its entries stay
  counted: safe, never more than the provider allows).

  State fields: rw / tw request / token window ms (0: the minute bucket of common.lua), erpm / etpm
  the effective limits (never above rpm / tpm unless learned on a key configured without one),
  wc tokens admitted so far, wl start of the latest admission, fs free slots.
]]

local function pad16(ms)
  return string.format('%016.0f', math.floor(ms * 1000 + 0.5))
end

local function pad15(n)
  return string.format('%015.0f', n)
end

-- Requests per window and the window's length (margin included); 0 when not windowed.
local function reqQuota(st, margin)
  if st.rw <= 0 or st.erpm <= 0 then return 0, 0 end
  local n = math.floor(st.erpm * st.rw / 60000)
  if n >= 1 then return n, st.rw + margin end
  return 1, math.ceil(60000 / st.erpm) + margin
end

local function tokQuota(st, margin)
  if st.tw <= 0 or st.etpm <= 0 then return 0, 0 end
  return math.floor(st.etpm * st.tw / 60000), st.tw + margin
end

-- The earliest start >= now the windows allow for one more request of `est` tokens, or -1 when the
-- token window can never hold it. Trims entries that can no longer matter.
local function windowEarliest(winKey, st, id, est, now, margin)
  local t = now
  local n, w = reqQuota(st, margin)
  if n > 0 then
    if st.wl > t then t = st.wl end
    local lo = id .. '|r|'
    -- one window is all enforcement needs; a provider that reports per window keeps two: learning
    -- (learn.lua) counts the window an answer arrived in, up to a window after its arrival
    local kept = st.lh == 'window' and 2 * w or w
    redis.call('ZREMRANGEBYLEX', winKey, '[' .. lo, '(' .. lo .. pad16(now - kept))
    local count = redis.call('ZLEXCOUNT', winKey, '[' .. lo, '[' .. lo .. '~')
    if count >= n then
      local e = redis.call('ZRANGE', winKey, '[' .. lo, '[' .. lo .. '~', 'BYLEX', 'LIMIT', count - n, 1)
      local s = tonumber(string.sub(e[1], #lo + 1, #lo + 16)) / 1000
      if s + w > t then t = s + w end
    end
  end
  local cap, tw = tokQuota(st, margin)
  if tw > 0 and est > 0 then
    if est > cap then return -1 end
    if st.wl > t then t = st.wl end
    local lo = id .. '|t|'
    local floor = st.wc - cap
    if floor > 0 then redis.call('ZREMRANGEBYLEX', winKey, '[' .. lo, '(' .. lo .. pad15(floor)) end
    -- the window starting after the entry whose running sum reaches wc + est - cap holds the rest
    local x = st.wc + est - cap
    if x > 0 then
      local e = redis.call('ZRANGE', winKey, '[' .. lo .. pad15(x), '[' .. lo .. '~', 'BYLEX', 'LIMIT', 0, 1)
      if e[1] then
        local s = tonumber(string.sub(e[1], #lo + 17, #lo + 32)) / 1000
        if s + tw > t then t = s + tw end
      end
    end
  end
  return t
end

-- The earliest free slot (a reservation given back) that starts at or after `notBefore` and holds
-- `est` tokens; drops the ones whose time has passed. Returns its index or nil.
local function freeSlot(st, est, now, notBefore)
  if not st.fs or #st.fs == 0 then return nil end
  local keep, best = {}, nil
  for _, f in ipairs(st.fs) do
    if f[1] >= now then
      keep[#keep + 1] = f
      if f[1] >= notBefore and (st.tw <= 0 or f[2] >= est) and (best == nil or f[1] < keep[best][1]) then
        best = #keep
      end
    end
  end
  st.fs = keep
  return best
end

-- Log an admission starting at `t` (>= the key's last one) under slot `slot`.
local function windowAdmit(winKey, st, id, est, t, slot)
  local n = reqQuota(st, 0)
  local cap = tokQuota(st, 0)
  local at = pad16(t)
  if n > 0 then redis.call('ZADD', winKey, 0, id .. '|r|' .. at .. '|' .. slot) end
  if cap > 0 and est > 0 then
    st.wc = st.wc + est
    redis.call('ZADD', winKey, 0, id .. '|t|' .. pad15(st.wc) .. '|' .. at .. '|' .. slot)
  end
  if t > st.wl then st.wl = t end
end

-- A windowed lease handed back unused: before its start, its place becomes a free slot; after it
-- (nothing went upstream, the caller was refused), its request entry is removed. Its token entry
-- stays (running sums cannot lose a term): counted, never over.
local function windowCancel(winKey, st, id, tokens, startMs, slot, now)
  if st.rw <= 0 and st.tw <= 0 then return end
  if startMs > now then
    st.fs = st.fs or {}
    st.fs[#st.fs + 1] = { startMs, tokens, slot }
    if #st.fs > 32 then table.remove(st.fs, 1) end
  else
    redis.call('ZREM', winKey, id .. '|r|' .. pad16(startMs) .. '|' .. slot)
  end
end

-- A windowed request that left for the provider later than it was admitted (its process stalled
-- between the admission and the send; the caller says when it sent: Lease.sent()): its entry moves
-- to that time, where the provider counts it, so the admissions of the next window wait for it
-- instead of reaching the provider inside the window it still fills (a 429). sent-1.lua does it at
-- once for a send later than half the margin (commands.ts sentLate), release for any other. Later
-- only, never past `now`, and only when more than WINDOW_SENT_LATE_MS late (most sends are a few
-- ms after their admission: left to the margin); an entry moved or trimmed already stays put. Moving an entry later can only delay
-- admissions that come after it: never more than the provider allows; the moved entry is never
-- after `now`, and a new admission never starts before `now`, so the log stays ordered by time.
-- Not moved: token entries (their order is their running sums'), class entries (classes.lua: a
-- class's own share counts from the admission). `st` nil: not checked (sent-1.lua; a key that is
-- not windowed has no request entry to move). Returns whether it moved.
local WINDOW_SENT_LATE_MS = 5
local function windowSent(winKey, st, id, startMs, slot, sentMs, now)
  if (st and (st.rw <= 0 or st.erpm <= 0)) or not slot then return false end
  local at = math.min(sentMs, now)
  if at <= startMs + WINDOW_SENT_LATE_MS then return false end
  local lo = id .. '|r|'
  if redis.call('ZREM', winKey, lo .. pad16(startMs) .. '|' .. slot) == 0 then return false end
  redis.call('ZADD', winKey, 0, lo .. pad16(at) .. '|' .. slot)
  return true
end

-- Requests the key admitted in the rolling window (W, margin excluded) ending at `now`, for status
-- and for learning (the provider's `remaining` against what the
-- pool sent); -1 when not windowed.
local function windowCount(winKey, st, id, now)
  if st.rw <= 0 or st.erpm <= 0 then return -1 end
  local _, w = reqQuota(st, 0)
  local lo = id .. '|r|'
  return redis.call('ZLEXCOUNT', winKey, '(' .. lo .. pad16(now - w), '[' .. lo .. pad16(now) .. '|~')
end

-- Requests reserved to start after `now` (not counted by windowCount), for status.
local function windowAhead(winKey, id, now)
  local lo = id .. '|r|'
  return redis.call('ZLEXCOUNT', winKey, '(' .. lo .. pad16(now) .. '|~', '[' .. lo .. '~')
end

-- Tokens the key admitted in the rolling token window (margin excluded) ending at `now`, for
-- status; -1 when not windowed. Token entries are ordered by running sum, hence by start: a binary
-- search over their ranks finds the newest one started by a time, O(log entries) lookups. When the
-- entry at the window's start was trimmed already, the window holds what came after the trim
-- point (wc - quota), capped at the quota.
local function windowTokens(winKey, st, id, now)
  local cap, w = tokQuota(st, 0)
  if w <= 0 then return -1 end
  local lo = id .. '|t|'
  local first = redis.call('ZLEXCOUNT', winKey, '-', '(' .. lo)
  local count = redis.call('ZLEXCOUNT', winKey, '[' .. lo, '[' .. lo .. '~')
  -- running sum of the newest entry started at or before t, or nil when none is left
  local function sumAt(t)
    local a, b, found = 0, count - 1, nil
    while a <= b do
      local m = math.floor((a + b) / 2)
      local e = redis.call('ZRANGE', winKey, first + m, first + m)[1]
      if tonumber(string.sub(e, #lo + 17, #lo + 32)) / 1000 <= t then
        found, a = e, m + 1
      else
        b = m - 1
      end
    end
    return found and tonumber(string.sub(found, #lo + 1, #lo + 15))
  end
  local upTo = sumAt(now)
  if not upTo then return 0 end
  local before = sumAt(now - w) or math.max(0, st.wc - cap)
  return math.max(0, math.min(cap, upTo - before))
end
