--[[
  Return a lease: give its slot back, reconcile tokens and cost with real usage, record latency and
  outcome, move the circuit breaker, cool on 429, revoke on 401/403.

  Learn the key's effective limits from the provider's rate-limit headers (see includes/learn.lua).
  Settle the gateway token's admission in the same call when asked (ARGV[26] not ''), whatever
  became of the lease (expired, key removed) except 'moved', which does nothing.

  KEYS[1] cfg  KEYS[2] st  KEYS[3] leases  KEYS[4] avail set of the key's group  KEYS[5] wait zset
  of the key's group  KEYS[6] meta  KEYS[7] spend (hash: nano-dollars and requests per model, per route)
  KEYS[8] win (the enforcement windows' log)  KEYS[9] tok:st  KEYS[10] tok:res (gateway tokens)
  KEYS[11] ser (traffic counters, see includes/series.lua: requests and 429s per key, 429s pool-wide)
  ARGV[1] lease  ARGV[2] outcome: ok | client_error | rate_limited | auth | server_error | aborted
  | unused (nothing went upstream: the request, the tokens, the slot and the money all come back,
  nothing is charged nor recorded)
  ARGV[3] latency ms (-1: none)  ARGV[4] real tokens (-1: unknown, the estimate stands)
  ARGV[5] real cost, nano-dollars (-1: unknown, the estimate stands)  ARGV[6] cool ms for a 429
  (-1: use the default)  ARGV[7..16] breaker and health settings (includes/health.lua releaseSettings)
  ARGV[17] default cooling after a 429, ms
  ARGV[18] the key's group as the caller knows it  ARGV[19] model  ARGV[20] route ('' = none)
  ARGV[21..24] x-ratelimit-limit-requests, -remaining-requests, -limit-tokens, -remaining-tokens
  (-1: absent)  ARGV[25] 1 to learn limits from them, 0 not to
  ARGV[26] gateway token id to settle ('' = none)  ARGV[27] its reservation ('' = none held in
  Redis)  ARGV[28] the token's cost, nano-dollars (-1: what this release charges the key: the real
  cost, else the estimate; 0 when unused)  ARGV[29] '1' = give the token's request back
  ARGV[30] when the request left for the provider, Redis ms (-1 or absent: unknown); on a windowed
  key a send later than the admission moves its request entry there (window.lua windowSent)
  Reply: {1, adminState, breakerState, transition, nowMs, nowMicros, settled}
      or {0, 'unknown_lease' | 'removed', settled}
      or {0, 'moved', group}: the key's models changed since the caller looked; nothing was done
      (nor settled), call again with the sets of that group
  settled: '' (settled, or nothing to settle) | unknown_token | unknown_reservation (tokenSettle)
  transition: '' | opened | reopened | closed | revoked | cooling | retired | probe_aborted
]]
--- @include "common"
--- @include "health"
--- @include "learn"
--- @include "tokens"
--- @include "series"

local cfgKey, stKey, leasesKey, availKey, waitKey, metaKey, spendKey, winKey = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local lease, outcome = ARGV[1], ARGV[2]
-- absent from processes older than ARGV[30] (a rolling upgrade)
local sentAt = tonumber(ARGV[30] or '-1') or -1
local latency, realTokens, realCost, coolMs =
  tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])

local seq, id, estTokens, estCost, startMs, slot = parseLease(lease)
if not seq then return redis.error_reply('ERR keypool: malformed lease') end
local st = loadState(stKey, id)
if st and st.g ~= ARGV[18] then return { 0, 'moved', st.g } end
-- an unknown lease expired (the reaper charged its estimate) or was released already
local now = nowMs()
-- the token pays what the key is charged, unless the caller says otherwise
local function settle(charged)
  if ARGV[26] == '' then return '' end
  local cost = tonumber(ARGV[28])
  if cost < 0 then cost = charged end
  return tokenSettle(KEYS[9], KEYS[10], ARGV[26], ARGV[27], cost, ARGV[29] == '1', now, false)
end
local keyCharge = outcome == 'unused' and 0 or (realCost >= 0 and realCost or estCost)
if redis.call('ZREM', leasesKey, lease) == 0 then return { 0, 'unknown_lease', settle(keyCharge) } end
-- the key was removed (and maybe added again: then this lease is not the new key's)
if not st or seq <= st.cs then return { 0, 'removed', settle(keyCharge) } end
local brk, hopts = releaseSettings(ARGV)

-- slot, tokens, money
st.inf = math.max(0, st.inf - 1)
refill(st, now)
local unused = outcome == 'unused'
if unused then
  -- a lease handed back before anything went upstream (its caller was refused) costs nothing
  if st.erpm > 0 and st.rw <= 0 then st.rt = math.min(reqCap(st), st.rt + 1) end
  if st.etpm > 0 and st.tw <= 0 then st.tt = math.min(tokCap(st), st.tt + estTokens) end
  if slot then windowCancel(winKey, st, id, estTokens, startMs, slot, now) end
  rollBudget(st, now)
  st.rs = math.max(0, st.rs - estCost)
elseif st.etpm > 0 and st.tw <= 0 and realTokens >= 0 then
  if st.tc == 'estimate' then
    -- the provider counted the estimate at admission (OpenAI counts max_tokens): nothing comes
    -- back; usage beyond the estimate is still a debt
    if realTokens > estTokens then st.tt = st.tt - (realTokens - estTokens) end
  else
    st.tt = math.min(tokCap(st), st.tt + estTokens - realTokens)
  end
end
if not unused then
  rollBudget(st, now)
  st.rs = math.max(0, st.rs - estCost)
  st.sp = st.sp + keyCharge
  -- fleet-wide spend per model and per route (a route is a named list of models, see the client)
  redis.call('HINCRBY', spendKey, 'm:' .. ARGV[19], keyCharge)
  redis.call('HINCRBY', spendKey, 'mn:' .. ARGV[19], 1)
  if ARGV[20] ~= '' then
    redis.call('HINCRBY', spendKey, 'r:' .. ARGV[20], keyCharge)
    redis.call('HINCRBY', spendKey, 'rn:' .. ARGV[20], 1)
  end
end

-- breaker
local isProbe = st.bp == lease
local transition = ''
local function openBreaker()
  if st.bc > 0 and now - st.bc > brk.maxCooldownMs then st.bo = 0 end
  st.bo = st.bo + 1
  local cool = math.min(brk.maxCooldownMs, brk.cooldownMs * 2 ^ (st.bo - 1))
  transition = st.br == 'closed' and 'opened' or 'reopened'
  st.br, st.bu, st.bp, st.bd, st.bf = 'open', now + cool, '', 0, 0
end
local function closeBreaker()
  st.br, st.bf, st.bc, st.bp, st.bd = 'closed', 0, now, '', 0
  transition = 'closed'
end

if outcome == 'ok' or outcome == 'client_error' then
  recordHealth(st, now, latency, true, false, hopts.windowMs)
  if isProbe then closeBreaker() elseif st.br == 'closed' then st.bf = 0 end
elseif outcome == 'server_error' then
  recordHealth(st, now, latency, true, true, hopts.windowMs)
  if isProbe then
    openBreaker()
  elseif st.br == 'closed' then
    st.bf = st.bf + 1
    local n, e = st.hn + st.hpn, st.he + st.hpe
    if st.bf >= brk.failures or (n >= brk.minRequests and e / n >= brk.errorRate) then openBreaker() end
  end
elseif outcome == 'rate_limited' then
  -- a 429 proves the key is valid and the provider reachable: a probe that gets one closes
  if isProbe then closeBreaker() end
  st.cu = math.max(st.cu, now + (coolMs >= 0 and coolMs or tonumber(ARGV[17])))
  if transition == '' then transition = 'cooling' end
elseif outcome == 'auth' then
  st.adm = 'revoked'
  if isProbe then st.bp, st.bd = '', 0 end
  transition = 'revoked'
elseif outcome == 'aborted' or unused then
  -- the caller gave up: not the key's fault; a probe that was aborted lets another one probe
  if isProbe then
    st.bp, st.bd = '', 0
    transition = 'probe_aborted'
  end
end
if st.hc then summarizeHealth(st, hopts) end
-- moved at the send already (sent-1.lua) unless that call was lost
if not unused and sentAt > 0 and startMs then windowSent(winKey, st, id, startMs, slot, sentAt, now) end
if ARGV[25] == '1' and not unused then
  local arrivedAt = startMs or now
  if latency >= 0 and now - latency > arrivedAt then arrivedAt = now - latency end
  if sentAt > arrivedAt then arrivedAt = math.min(sentAt, now) end
  learnLimits(winKey, st, id, now, outcome, tonumber(ARGV[21]), tonumber(ARGV[22]), tonumber(ARGV[23]), tonumber(ARGV[24]), arrivedAt, estTokens)
end

if not unused then seriesRelease(KEYS[11], now, st, id, outcome == 'rate_limited') end

-- where the key sits now
local nowWhole, nowMicros = timeReply(now)
if st.adm == 'draining' and st.ret == 1 and st.inf == 0 then
  redis.call('HDEL', cfgKey, id)
  redis.call('HDEL', stKey, id)
  redis.call('SREM', availKey, id)
  redis.call('ZREM', waitKey, id)
  redis.call('HINCRBY', metaKey, 'v', 1)
  return { 1, 'retired', st.br, 'retired', nowWhole, nowMicros, settle(keyCharge) }
end
-- a slot, money held by this lease, or the whole key just came back: a candidate again at once
placeKey(st, id, availKey, waitKey, outcome == 'rate_limited',
  transition == 'closed' or transition == 'probe_aborted' or st.wr == 'concurrency' or st.wr == 'budget'
    or (unused and st.wr == 'rate_limited'))
saveState(stKey, id, st)
return { 1, st.adm, st.br, transition, nowWhole, nowMicros, settle(keyCharge) }
