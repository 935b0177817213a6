--[[
  The outcome of a health probe (a free call such as GET /v1/models, made by the scheduler, not a
  lease) on a key that is open, half-open, revoked or degraded. A success closes the breaker and
  clears a revocation; a failure extends an open breaker (reopens with a longer cooldown); a 401/403
  revokes. Probes feed the health window, so a degraded key that gets little traffic is judged on
  fresh samples. Disabled and draining keys are left alone (an operator chose that).

  KEYS[1] st  KEYS[2] avail set of the key's group  KEYS[3] wait zset of the key's group
  ARGV[1] key id  ARGV[2] outcome: ok | server_error | rate_limited | auth
  ARGV[3] latency ms (-1: none)  ARGV[4] the key's group as the caller knows it
  ARGV[5..9] breaker: failures, errorRate, minRequests, cooldownMs, maxCooldownMs
  ARGV[10..14] health: windowMs, p99Ms, errorRate, minRequests, degradedScore
  ARGV[15] cooling ms for a 429 (-1: the default in ARGV[16])  ARGV[16] default cooling ms
  Reply: {1, adminState, breakerState, transition} or {0, 'not_found'} or {0, 'moved', group}
  transition: '' | closed | reopened | revoked | unrevoked | cooling | skipped
]]
--- @include "common"
--- @include "health"

local stKey, availKey, waitKey = KEYS[1], KEYS[2], KEYS[3]
local id, outcome, latency = ARGV[1], ARGV[2], tonumber(ARGV[3])
local st = loadState(stKey, id)
if not st then return { 0, 'not_found' } end
if st.g ~= ARGV[4] then return { 0, 'moved', st.g } end
if st.adm == 'disabled' or st.adm == 'draining' then return { 1, st.adm, st.br, 'skipped' } end
local now = nowMs()
local brk = {
  cooldownMs = tonumber(ARGV[8]), maxCooldownMs = tonumber(ARGV[9]),
}
local hopts = healthSettings(ARGV, 10)
local transition = ''

if outcome == 'ok' or outcome == 'rate_limited' then
  -- the key is valid and the provider reachable (a 429 proves it too)
  recordHealth(st, now, latency, outcome == 'ok', false, hopts.windowMs)
  if st.adm == 'revoked' then
    st.adm = 'active'
    transition = 'unrevoked'
  end
  if st.br ~= 'closed' then
    st.br, st.bf, st.bc, st.bp, st.bd = 'closed', 0, now, '', 0
    transition = 'closed'
  end
  if outcome == 'rate_limited' then
    local cool = tonumber(ARGV[15])
    st.cu = math.max(st.cu, now + (cool >= 0 and cool or tonumber(ARGV[16])))
    if transition == '' then transition = 'cooling' end
  end
elseif outcome == 'auth' then
  if st.adm ~= 'revoked' then transition = 'revoked' end
  st.adm = 'revoked'
else
  recordHealth(st, now, latency, true, true, hopts.windowMs)
  if st.br ~= 'closed' then
    -- still failing: open again, for longer (the same growth as a failed half-open request)
    if st.bc > 0 and now - st.bc > brk.maxCooldownMs then st.bo = 0 end
    st.bo = st.bo + 1
    local cool = math.min(brk.maxCooldownMs, brk.cooldownMs * 2 ^ (st.bo - 1))
    st.br, st.bu, st.bf = 'open', now + cool, 0
    -- a half-open probe lease in flight keeps its place: its own outcome still counts
    if not (st.bp ~= '' and st.bd > now) then st.bp, st.bd = '', 0 end
    transition = 'reopened'
  end
end
if st.hc then summarizeHealth(st, hopts) end

-- where the key sits now
placeKey(st, id, availKey, waitKey, st.cu > now, transition == 'closed' or transition == 'unrevoked')
saveState(stKey, id, st)
return { 1, st.adm, st.br, transition }
