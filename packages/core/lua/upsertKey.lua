--[[
  Add a key or change its configuration (limits, models, budget, weight). Its state (buckets,
  breaker, spend, admin state) is kept: a fleet restarting with the same keys changes nothing.
  The limits the scripts enforce are copied into the state, so the hot path never reads cfg.

  KEYS (5, or 7 when the group changes, so the caller passes numkeys and the file name has no count):
  KEYS[1] cfg  KEYS[2] st  KEYS[3] meta  KEYS[4] avail set of the new group  KEYS[5] wait zset of
  the new group; KEYS[6], KEYS[7] avail and wait of the old group when the group changes
  ARGV[1] key id  ARGV[2] config JSON  ARGV[3] the config JSON the caller read before ('' = none)
  ARGV[4] a random epoch, kept only if the pool has none: a Redis that lost its data gets a new one,
  which tells every process to register its keys again
  Reply: {1, 'created' | 'updated' | 'unchanged', epoch} or {0, 'conflict'} (someone changed it
  meanwhile: read again and retry)
]]
--- @include "common"

local cfgKey, stKey, metaKey, availKey, waitKey = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local id, raw, expected = ARGV[1], ARGV[2], ARGV[3]
local now = nowMs()
local old = redis.call('HGET', cfgKey, id)

if (old or '') ~= expected then return { 0, 'conflict' } end
redis.call('HSETNX', metaKey, 'epoch', ARGV[4])
local epoch = redis.call('HGET', metaKey, 'epoch')
if old == raw then return { 1, 'unchanged', epoch } end

local cfg = cjson.decode(raw)
redis.call('HSET', cfgKey, id, raw)
redis.call('HINCRBY', metaKey, 'v', 1)
if not old then
  saveState(stKey, id, newState(cfg, now, tonumber(redis.call('HGET', metaKey, 'seq') or '0')))
  redis.call('SADD', availKey, id)
  return { 1, 'created', epoch }
end

local st = loadState(stKey, id) or newState(cfg, now, tonumber(redis.call('HGET', metaKey, 'seq') or '0'))
refill(st, now)
-- new limits apply from now: tokens above the new burst are dropped, a raised burst fills later;
-- a limit set where there was none starts with a full bucket
st.rt = st.rpm > 0 and math.min(st.rt, cfg.rb) or cfg.rb
st.tt = st.tpm > 0 and math.min(st.tt, cfg.tb) or cfg.tb
applyLimits(st, cfg)
saveState(stKey, id, st)
if KEYS[6] then
  redis.call('SREM', KEYS[6], id)
  redis.call('ZREM', KEYS[7], id)
else
  redis.call('ZREM', waitKey, id)
end
-- let the next acquire judge it under the new limits
if st.adm == 'active' then redis.call('SADD', availKey, id) else redis.call('ZADD', waitKey, PARKED, id) end
return { 1, 'updated', epoch }
