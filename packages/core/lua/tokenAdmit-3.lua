--[[
  Admit one gateway request for a token, atomically: look the token up by its hash, refuse it when
  revoked or when it may not ask for the model, then take one request from its bucket and reserve
  the estimated cost against its budget, or neither. A refusal changes nothing. For a request made
  without a key (the gateway request path admits inside acquire.lua instead, in the same call).

  KEYS[1] tok (sha256 -> settings JSON)  KEYS[2] tok:st (id -> msgpack state)  KEYS[3] tok:res
  (zset reservation -> expiry)
  ARGV[1] sha256 hex of the token  ARGV[2] model (or route) asked for  ARGV[3] estimated cost,
  nano-dollars  ARGV[4] reservation lifetime ms  ARGV[5] recheck ms (budget held by reservations)
  ARGV[6] '1': send the settings JSON back (the caller has not cached them), else '0'
  Reply: {1, id, reservation, settingsJSON | '', spentNanos, reservedNanos, periodEndMs (-1 never)}
      or {0, reason, retryAfterMs (-1: not by waiting), id ('' when unknown)}
  reason: unknown | revoked | model_not_allowed | rate_limited | budget_exhausted | over_budget
  (over_budget: the estimate alone exceeds the whole budget; retryAfterMs -1)
]]
--- @include "common"
--- @include "tokens"

local stKey, resKey = KEYS[2], KEYS[3]
local estCost = tonumber(ARGV[3])
local now = nowMs()
local a, refusal = tokenCheck(KEYS[1], stKey, resKey, ARGV[1], ARGV[2], estCost, tonumber(ARGV[5]), now)
if not a then return refusal end
local reservation = tokenTake(stKey, resKey, a, estCost, ARGV[3], now + tonumber(ARGV[4]))
return { 1, a.id, reservation, ARGV[6] == '1' and a.raw or '', a.st.sp, a.st.rs, a.pend }
