--[[
  Periodic upkeep of a whole pool (the scheduler runs it; O(keys), never on the request path):
  - gives back the slots of every expired lease (acquire reaps only a few per call, so a pool
    without traffic would keep them), charging their estimate once as acquire's reaper does;
  - starts the next budget period of keys with day or month budgets (spend back to 0, a key that
    was out of budget becomes a candidate again at once) and reports what the last period spent;
  - forgets health windows older than two windows (status then stops showing stale percentiles).

  KEYS (4 + 2 per group, so the caller passes numkeys and the file name has no count):
  KEYS[1] cfg  KEYS[2] st  KEYS[3] leases  KEYS[4] meta; then two per key group: avail set, wait zset
  ARGV[1] the groups of those pairs, comma-separated, in order  ARGV[2] health window ms
  ARGV[3..6] health: p99Ms, errorRate, minRequests, degradedScore
  Reply: {leasesReaped, {"<keyId>:<previous period spend, nano-dollars>", ...}, healthWindowsCleared}
]]
--- @include "common"
--- @include "health"

local cfgKey, stKey, leasesKey, metaKey = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local groups = {}
local gi = 0
for g in string.gmatch(ARGV[1], '[^,]+') do
  gi = gi + 1
  groups[g] = gi
end
local windowMs = tonumber(ARGV[2])
local hopts = {
  windowMs = windowMs, p99Ms = tonumber(ARGV[3]), errorRate = tonumber(ARGV[4]),
  minRequests = tonumber(ARGV[5]), degradedScore = tonumber(ARGV[6]),
}
local now = nowMs()

-- 1. expired leases (same rules as acquire's reaper)
local reaped = 0
local expired = redis.call('ZRANGEBYSCORE', leasesKey, '-inf', tostring(math.floor(now)))
for _, lease in ipairs(expired) do
  local removed = reapLease(cfgKey, stKey, leasesKey, metaKey, lease)
  local gidx = removed and groups[removed.g]
  if gidx then
    redis.call('SREM', KEYS[3 + 2 * gidx], removed.id)
    redis.call('ZREM', KEYS[4 + 2 * gidx], removed.id)
  end
  reaped = reaped + 1
end

-- 2. budget periods and 3. stale health windows
local rolled, cleared = {}, 0
local ids = redis.call('HKEYS', stKey)
for _, id in ipairs(ids) do
  local st = loadState(stKey, id)
  local changed = false
  if st.bud >= 0 and st.per ~= 'total' then
    local pid = budgetPeriod(st.per, now)
    if st.pid ~= pid then
      local spent, before = st.sp, st.pid
      local wasBlocked = st.wr == 'budget'
      rollBudget(st, now)
      changed = true
      if before ~= -1 then rolled[#rolled + 1] = id .. ':' .. string.format('%.0f', spent) end
      local gidx = groups[st.g]
      if wasBlocked and gidx and st.adm == 'active' and st.br == 'closed' and st.cu <= now then
        redis.call('ZREM', KEYS[4 + 2 * gidx], id)
        redis.call('SADD', KEYS[3 + 2 * gidx], id)
      end
    end
  end
  if st.hw and now - st.hw >= 2 * windowMs then
    resetHealth(st, now)
    summarizeHealth(st, hopts)
    cleared = cleared + 1
    changed = true
  end
  if changed then saveState(stKey, id, st) end
end
return { reaped, rolled, cleared }
