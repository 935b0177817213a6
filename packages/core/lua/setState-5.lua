--[[
  Operator transitions of one key.

  KEYS[1] cfg  KEYS[2] st  KEYS[3] avail set of the key's group  KEYS[4] wait zset of the key's
  group  KEYS[5] meta
  ARGV[1] key id  ARGV[2] action:
    disable       no new leases until enabled (in-flight leases finish)
    enable        active again; also clears a revocation (after a 401/403) and a drain
    drain         no new leases; in-flight leases finish; the key stays (enable brings it back)
    retire        drain, then remove the key once its last lease is released
    remove        remove now (leases in flight are released as unknown)
    reset         close the breaker, end cooling, forget health history and learnt limits
                  (effective back to configured)
    reset_budget  start the budget period again from zero spend
    unretire      undo a retire that has not completed yet (the key came back to its secret source);
                  any other state is left as it is
  ARGV[3] the key's group as the caller knows it
  Reply: {1, adminState, breakerState, inFlight} or {0, 'not_found'} or {0, 'moved', group} (the
  key's models changed: call again with the sets of that group)
]]
--- @include "common"

local cfgKey, stKey, availKey, waitKey, metaKey = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local id, action = ARGV[1], ARGV[2]
local st = loadState(stKey, id)
if not st then return { 0, 'not_found' } end
if st.g ~= ARGV[3] then return { 0, 'moved', st.g } end

local function removeNow()
  redis.call('HDEL', cfgKey, id)
  redis.call('HDEL', stKey, id)
  redis.call('SREM', availKey, id)
  redis.call('ZREM', waitKey, id)
  redis.call('HINCRBY', metaKey, 'v', 1)
  return { 1, 'removed', st.br, st.inf }
end

if action == 'remove' then return removeNow() end
if action == 'disable' or action == 'drain' or action == 'retire' then
  st.adm = action == 'disable' and 'disabled' or 'draining'
  st.ret = action == 'retire' and 1 or 0
  if st.ret == 1 and st.inf == 0 then return removeNow() end
  redis.call('SREM', availKey, id)
  redis.call('ZADD', waitKey, PARKED, id)
  st.wr = st.adm
elseif action == 'enable' then
  st.adm, st.ret, st.wr = 'active', 0, ''
  redis.call('ZREM', waitKey, id)
  redis.call('SADD', availKey, id)
elseif action == 'unretire' then
  if st.adm == 'draining' and st.ret == 1 then
    st.adm, st.ret, st.wr = 'active', 0, ''
    redis.call('ZREM', waitKey, id)
    redis.call('SADD', availKey, id)
  end
elseif action == 'reset' then
  st.br, st.bf, st.bo, st.bu, st.bc, st.bp, st.bd, st.cu = 'closed', 0, 0, 0, 0, '', 0, 0
  st.hs, st.p50, st.p99, st.er, st.deg = 1, 0, 0, 0, 0
  st.hw, st.hc, st.hp, st.hn, st.he, st.hpn, st.hpe = nil, nil, nil, 0, 0, 0, 0
  st.hq, st.ht, st.hk = nil, nil, nil
  st.erpm, st.etpm, st.rl, st.tl, st.ld, st.li = st.rpm, st.tpm, -1, -1, 0, 0
  st.om, st.op, st.os, st.oc, st.ox = nil, nil, nil, nil, nil
  if st.adm == 'active' then
    st.wr = ''
    redis.call('ZREM', waitKey, id)
    redis.call('SADD', availKey, id)
  end
elseif action == 'reset_budget' then
  st.sp = 0
  if st.adm == 'active' and st.wr == 'budget' then
    st.wr = ''
    redis.call('ZREM', waitKey, id)
    redis.call('SADD', availKey, id)
  end
else
  return redis.error_reply('ERR keypool: unknown action ' .. action)
end
saveState(stKey, id, st)
return { 1, st.adm, st.br, st.inf }
