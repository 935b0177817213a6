--[[
  Return a lease: give its slot back, reconcile tokens and cost with real usage, record latency and
  outcome, move the circuit breaker, cool on 429, revoke on 401/403.

  KEYS[1] cfg  KEYS[2] st  KEYS[3] hl  KEYS[4] leases  KEYS[5] li  KEYS[6] avail set of the key's
  group  KEYS[7] wait zset of the key's group  KEYS[8] meta
  ARGV[1] lease id  ARGV[2] outcome: ok | client_error | rate_limited | auth | server_error | aborted
  ARGV[3] latency ms (-1: none)  ARGV[4] real tokens (-1: unknown, the estimate stands)
  ARGV[5] real cost, nano-dollars (-1: unknown, the estimate stands)  ARGV[6] cool ms for a 429
  (-1: use the default)  ARGV[7..17] breaker and health settings, in the order read below
  Reply: {1, adminState, breakerState, transition, nowMs} or {0, 'unknown_lease' | 'removed'}
  transition: '' | opened | reopened | closed | revoked | cooling | retired
]]
--- @include "common"
--- @include "health"

local cfgKey, stKey, hlKey, leasesKey, liKey, availKey, waitKey, metaKey =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local leaseId, outcome = ARGV[1], ARGV[2]
local latency, realTokens, realCost, coolMs =
  tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local brk = {
  failures = tonumber(ARGV[7]), errorRate = tonumber(ARGV[8]), minRequests = tonumber(ARGV[9]),
  cooldownMs = tonumber(ARGV[10]), maxCooldownMs = tonumber(ARGV[11]),
}
local hopts = {
  windowMs = tonumber(ARGV[12]), p99Ms = tonumber(ARGV[13]), errorRate = tonumber(ARGV[14]),
  minRequests = tonumber(ARGV[15]), degradedScore = tonumber(ARGV[16]),
}
local defaultCoolMs = tonumber(ARGV[17])
local now = nowMs()

local rec = redis.call('HGET', liKey, leaseId)
if not rec then return { 0, 'unknown_lease' } end
rec = cmsgpack.unpack(rec)
redis.call('HDEL', liKey, leaseId)
redis.call('ZREM', leasesKey, leaseId)
local id = rec.k
local cfg = loadCfg(cfgKey, id)
if not cfg then return { 0, 'removed' } end
local st = loadState(stKey, id, cfg, now)

-- slot, tokens, money
st.inf = math.max(0, st.inf - 1)
refill(cfg, st, now)
if cfg.tpm > 0 and realTokens >= 0 then
  st.tt = math.min(cfg.tb, st.tt + rec.t - realTokens)
end
rollBudget(cfg, st, now)
st.rs = math.max(0, st.rs - rec.c)
st.sp = st.sp + (realCost >= 0 and realCost or rec.c)

-- breaker
local isProbe = st.bp == leaseId
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

local h = loadHealth(hlKey, id, now)
if outcome == 'ok' or outcome == 'client_error' then
  recordHealth(h, now, latency, true, false, hopts)
  if isProbe then closeBreaker() elseif st.br == 'closed' then st.bf = 0 end
elseif outcome == 'server_error' then
  recordHealth(h, now, latency, true, true, hopts)
  if isProbe then
    openBreaker()
  elseif st.br == 'closed' then
    st.bf = st.bf + 1
    local n, e = h.n + h.pn, h.e + h.pe
    if st.bf >= brk.failures or (n >= brk.minRequests and e / n >= brk.errorRate) then openBreaker() end
  end
elseif outcome == 'rate_limited' then
  -- a 429 proves the key is valid and the provider reachable: a probe that gets one closes
  if isProbe then closeBreaker() end
  st.cu = math.max(st.cu, now + (coolMs >= 0 and coolMs or defaultCoolMs))
  if transition == '' then transition = 'cooling' end
elseif outcome == 'auth' then
  st.adm = 'revoked'
  if isProbe then st.bp, st.bd = '', 0 end
  transition = 'revoked'
elseif outcome == 'aborted' then
  -- the caller gave up: not the key's fault; a probe that was aborted lets another one probe
  if isProbe then st.bp, st.bd = '', 0 end
end
local hsum = summarizeHealth(h, hopts)
st.hs, st.p50, st.p99, st.er, st.deg = hsum.hs, hsum.p50, hsum.p99, hsum.er, hsum.deg

-- where the key sits now
if st.adm == 'draining' and st.ret == 1 and st.inf == 0 then
  redis.call('HDEL', cfgKey, id)
  redis.call('HDEL', stKey, id)
  redis.call('HDEL', hlKey, id)
  redis.call('SREM', availKey, id)
  redis.call('ZREM', waitKey, id)
  redis.call('HINCRBY', metaKey, 'v', 1)
  return { 1, 'retired', st.br, 'retired', string.format('%.3f', now) }
end
if st.adm ~= 'active' then
  redis.call('SREM', availKey, id)
  redis.call('ZADD', waitKey, PARKED, id)
  st.wr = st.adm
elseif st.br == 'open' then
  redis.call('SREM', availKey, id)
  redis.call('ZADD', waitKey, st.bu, id)
  st.wr = 'circuit_open'
elseif outcome == 'rate_limited' then
  redis.call('SREM', availKey, id)
  redis.call('ZADD', waitKey, st.cu, id)
  st.wr = 'cooling'
elseif transition == 'closed' or st.wr == 'concurrency' then
  -- a slot (or the whole key) just came back: make it a candidate again at once
  if redis.call('ZREM', waitKey, id) == 1 then redis.call('SADD', availKey, id) end
  if transition == 'closed' then redis.call('SADD', availKey, id) end
  st.wr = ''
end
saveState(stKey, id, st)
redis.call('HSET', hlKey, id, cmsgpack.pack(h))
return { 1, st.adm, st.br, transition, string.format('%.3f', now) }
