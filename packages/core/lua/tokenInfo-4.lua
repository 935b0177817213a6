--[[
  Gateway tokens as operators see them, computed with the rules admit uses (refill, budget
  period). Expired reservations are reaped first, so reserved and spent are current. Never a
  token: settings, counters and the hint only.

  KEYS[1] tok  KEYS[2] tok:id  KEYS[3] tok:st  KEYS[4] tok:res
  ARGV[1] token id, or '' for every token  ARGV[2] sha256 hex the token must have ('' = any): to
  verify a token presented by a caller (an id is only a prefix of the hash)
  Reply: JSON {now, tokens: [view, ...]}; view: {cfg (settings JSON string), rt, n, sp, rs (integer
  strings, nano-dollars), ca, lu, rv (ms, 0 = never), pend (budget period end ms, -1 never)}
]]
--- @include "common"
--- @include "tokens"

local tokKey, idKey, stKey, resKey = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local now = nowMs()
reapReservations(resKey, stKey, now, 1000)

local ids
if ARGV[1] ~= '' then
  ids = { ARGV[1], redis.call('HGET', idKey, ARGV[1]) }
  if not ids[2] or (ARGV[2] ~= '' and ids[2] ~= ARGV[2]) then ids = {} end
else
  ids = redis.call('HGETALL', idKey)
end
local views = {}
for i = 1, #ids, 2 do
  local raw = redis.call('HGET', tokKey, ids[i + 1])
  local st = loadState(stKey, ids[i])
  if raw and st then views[#views + 1] = tokenView(raw, st, now) end
end
return cjson.encode({ now = math.floor(now), tokens = views })
