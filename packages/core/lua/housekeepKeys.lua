--[[
  Housekeeping, part 2, for the keys named in ARGV (the caller reads the ids with HSCAN and passes
  a few dozen a call; the call stops once it has run ARGV[7] microseconds and says how many it did,
  so no call grows with the pool):
  - starts the next budget period of keys with day or month budgets (spend back to 0, a key that
    was out of budget becomes a candidate again at once) and reports what the last period spent;
  - forgets health windows older than two windows (status then stops showing stale percentiles).
  An id with no state is skipped.

  KEYS (1 + 2 per group, so the caller passes numkeys and the file name has no count):
  KEYS[1] st; then two per key group: avail set, wait zset
  ARGV[1] the groups of those pairs, comma-separated, in order  ARGV[2] health window ms
  ARGV[3..6] health: p99Ms, errorRate, minRequests, degradedScore  ARGV[7] time budget, us (at
  least one id is done)  ARGV[8..] key ids
  Reply: {{"<keyId>:<previous period spend, nano-dollars>", ...}, healthWindowsCleared, done}
]]
--- @include "common"
--- @include "health"

local stKey = KEYS[1]
local groups = groupIndexes(ARGV[1])
local hopts = healthSettings(ARGV, 2)
local windowMs = hopts.windowMs
local now = nowMs()

local budget = tonumber(ARGV[7])
local rolled, cleared, done = {}, 0, 0
for i = 8, #ARGV do
  local id = ARGV[i]
  local st = loadState(stKey, id)
  if st then
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
          redis.call('ZREM', KEYS[1 + 2 * gidx], id)
          redis.call('SADD', KEYS[2 * gidx], id)
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
  done = done + 1
  if overBudget(now, budget) then break end
end
return { rolled, cleared, done }
