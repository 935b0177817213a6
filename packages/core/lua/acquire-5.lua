--[[
  Pick a usable key for a model and take, atomically: one request token, the estimated tokens,
  a concurrency slot with a deadline, and the estimated cost from the budget.

  KEYS[1] cfg  KEYS[2] st  KEYS[3] leases (zset lease -> deadline)  KEYS[4] li (lease -> record)
  KEYS[5] meta; then two per key group that serves the model: KEYS[4+2i] avail set, KEYS[5+2i] wait zset
  ARGV[1] estimated tokens  ARGV[2] estimated cost (nano-dollars)  ARGV[3] lease timeout ms
  ARGV[4] concurrency recheck ms  ARGV[5] random seed  ARGV[6] excluded key ids, comma-separated
  ARGV[7] candidates per round (power of k choices)  ARGV[8] model (kept on the lease record)
  Reply: {1, keyId, leaseId, deadlineMs, nowMs, cfgJson, version, probe 0|1}
      or {0, reason, retryAfterMs (-1: not by waiting), version}

  Cost does not grow with the pool: blocked keys are moved out of the avail set into the wait zset
  scored by the time they become usable, and come back when that time passes (or on release).
  Each acquire samples a few candidates, so its work is bounded by the number of state changes.
]]
--- @include "common"

local cfgKey, stKey, leasesKey, liKey, metaKey = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local est = tonumber(ARGV[1])
local estCost = tonumber(ARGV[2])
local leaseTtl = tonumber(ARGV[3])
local recheckMs = tonumber(ARGV[4])
math.randomseed(tonumber(ARGV[5]))
local excluded = {}
for id in string.gmatch(ARGV[6], '[^,]+') do excluded[id] = true end
local k = tonumber(ARGV[7])
local model = ARGV[8]
local now = nowMs()

local ngroups = (#KEYS - 5) / 2
local function avail(i) return KEYS[4 + 2 * i] end
local function waitz(i) return KEYS[5 + 2 * i] end

-- 1. Give back the slots of a few leases whose holder never released them (process killed).
local expired = redis.call('ZRANGEBYSCORE', leasesKey, '-inf', now, 'LIMIT', 0, 8)
for _, lid in ipairs(expired) do
  local rec = redis.call('HGET', liKey, lid)
  if rec then
    rec = cmsgpack.unpack(rec)
    local cfg = loadCfg(cfgKey, rec.k)
    if cfg then
      local st = loadState(stKey, rec.k, cfg, now)
      st.inf = math.max(0, st.inf - 1)
      -- usage unknown: the estimate stays spent, charged once
      st.rs = math.max(0, st.rs - rec.c)
      st.sp = st.sp + rec.c
      if st.bp == lid then
        -- the probe died with its process: let another request probe
        st.bp = ''
        st.bd = 0
      end
      saveState(stKey, rec.k, st)
    end
    redis.call('HDEL', liKey, lid)
  end
  redis.call('ZREM', leasesKey, lid)
end

-- 2. Keys whose wait is over become candidates again.
for i = 1, ngroups do
  local due = redis.call('ZRANGEBYSCORE', waitz(i), '-inf', now, 'LIMIT', 0, 32)
  if #due > 0 then
    redis.call('SADD', avail(i), unpack(due))
    redis.call('ZREM', waitz(i), unpack(due))
  end
end

-- 3. Sample candidates; move the blocked ones out of the avail sets.
local sizes, total = {}, 0
for i = 1, ngroups do
  sizes[i] = redis.call('SCARD', avail(i))
  total = total + sizes[i]
end

local function sample(n)
  if ngroups == 1 then
    return redis.call('SRANDMEMBER', avail(1), n), { 1 }
  end
  local ids, from = {}, {}
  for _ = 1, n do
    if total <= 0 then break end
    local r = math.random() * total
    for i = 1, ngroups do
      if r < sizes[i] or i == ngroups then
        if sizes[i] > 0 then
          local id = redis.call('SRANDMEMBER', avail(i))
          if id then
            ids[#ids + 1] = id
            from[#ids] = i
          end
        end
        break
      end
      r = r - sizes[i]
    end
  end
  return ids, from
end

local seen, usable, nseen = {}, {}, 0
local rounds = 0
while #usable == 0 and total > nseen and rounds < 8 do
  rounds = rounds + 1
  local ids, from = sample(k)
  if #ids == 0 then break end
  for j, id in ipairs(ids) do
    if not seen[id] then
      seen[id] = true
      local g = ngroups == 1 and 1 or from[j]
      if excluded[id] then
        nseen = nseen + 1
      else
        local cfg, raw = loadCfg(cfgKey, id)
        if not cfg then
          -- removed key left in a set
          redis.call('SREM', avail(g), id)
          sizes[g] = sizes[g] - 1
          total = total - 1
        else
          local st = loadState(stKey, id, cfg, now)
          local kind, untilMs, reason = evaluate(cfg, st, now, est, estCost, recheckMs)
          if kind == 'ok' then
            usable[#usable + 1] = { id = id, cfg = cfg, raw = raw, st = st, s = score(cfg, st) }
          elseif kind == 'skip' then
            nseen = nseen + 1
          else
            redis.call('SREM', avail(g), id)
            sizes[g] = sizes[g] - 1
            total = total - 1
            redis.call('ZADD', waitz(g), kind == 'wait' and untilMs or PARKED, id)
            st.wr = reason
            saveState(stKey, id, st)
          end
        end
      end
    end
  end
end

local version = tonumber(redis.call('HGET', metaKey, 'v') or '0')

if #usable == 0 then
  -- Nothing usable: say when the earliest waiting key becomes usable, and why it waits.
  local best, bestId, bestG = nil, nil, nil
  for i = 1, ngroups do
    local first = redis.call('ZRANGE', waitz(i), 0, 0, 'WITHSCORES')
    if first[1] and (best == nil or tonumber(first[2]) < best) then
      best, bestId = tonumber(first[2]), first[1]
    end
  end
  if total > nseen then
    -- sampling gave up with candidates left unexamined: try again at once
    return { 0, 'busy', 0, version }
  end
  if best == nil then
    if nseen > 0 and next(excluded) ~= nil then return { 0, 'unavailable', -1, version } end
    if nseen > 0 then return { 0, 'too_large', -1, version } end
    return { 0, 'unavailable', -1, version }
  end
  local reason = 'rate_limited'
  local raw = redis.call('HGET', stKey, bestId)
  if raw then
    local wr = cmsgpack.unpack(raw).wr
    if wr and wr ~= '' then reason = REPORTED[wr] and wr or 'unavailable' end
  end
  if best >= PARKED then return { 0, reason, -1, version } end
  return { 0, reason, math.max(0, math.ceil(best - now)), version }
end

-- 4. Choose among the usable candidates with probability proportional to their score.
local chosen = usable[1]
if #usable > 1 then
  local sum = 0
  for _, c in ipairs(usable) do sum = sum + c.s end
  local r = math.random() * sum
  for _, c in ipairs(usable) do
    r = r - c.s
    if r <= 0 then chosen = c break end
  end
end

local st, cfg, id = chosen.st, chosen.cfg, chosen.id
local leaseId = tostring(redis.call('HINCRBY', metaKey, 'seq', 1))
local deadline = now + leaseTtl
local probe = 0
if st.br == 'open' or (st.br == 'half_open' and (st.bp == '' or st.bd <= now)) then
  st.br = 'half_open'
  st.bp = leaseId
  st.bd = deadline
  probe = 1
end
if cfg.rpm > 0 then st.rt = st.rt - 1 end
if cfg.tpm > 0 then st.tt = st.tt - est end
st.inf = st.inf + 1
st.rs = st.rs + estCost
st.wr = ''
saveState(stKey, id, st)
redis.call('ZADD', leasesKey, deadline, leaseId)
redis.call('HSET', liKey, leaseId, cmsgpack.pack({ k = id, t = est, c = estCost, p = probe, m = model }))
return { 1, id, leaseId, string.format('%.3f', deadline), string.format('%.3f', now), chosen.raw, version, probe }
