--[[
  Store the fleet's status snapshot, only while the caller still holds the right to compute it: an
  admin write that forgot the snapshot (and its lock) meanwhile, or a lock that expired and went to
  another process, makes this a no-op, so a snapshot read before a change never lands after it.

  KEYS[1] snap  KEYS[2] snap:at  KEYS[3] snap:lock
  ARGV[1] the lock's token  ARGV[2] the snapshot (JSON)  ARGV[3] its stamp ("takenAt:ttl:offset")
  ARGV[4] time to live, ms
  Reply: 1 stored (and the lock freed), 0 not the lock's holder any more (nothing written)
]]
--- @include "common"

if redis.call('GET', KEYS[3]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[4])
redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[4])
redis.call('DEL', KEYS[3])
return 1
