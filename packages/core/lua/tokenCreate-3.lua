--[[
  Register a new gateway token under its hash, with fresh state (full bucket, nothing spent).
  The creation time is Redis time, like every other time the scripts keep.

  KEYS[1] tok  KEYS[2] tok:id  KEYS[3] tok:st
  ARGV[1] sha256 hex of the token  ARGV[2] token id  ARGV[3] settings JSON
  Reply: {1, viewJSON} (see tokenView) or {0, 'exists'} (hash or id taken: make another token)
]]
--- @include "common"
--- @include "tokens"

local tokKey, idKey, stKey = KEYS[1], KEYS[2], KEYS[3]
local hash, id, raw = ARGV[1], ARGV[2], ARGV[3]
if redis.call('HEXISTS', tokKey, hash) == 1 or redis.call('HEXISTS', idKey, id) == 1 then
  return { 0, 'exists' }
end
local now = nowMs()
local st = newTokenState(cjson.decode(raw), now)
redis.call('HSET', tokKey, hash, raw)
redis.call('HSET', idKey, id, hash)
-- the view below refills and rolls the period of `st` (not saved): nothing kept (common.lua)
saveChanging(stKey, id, st)
return { 1, cjson.encode(tokenView(raw, st, now)) }
