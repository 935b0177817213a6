--[[
  How many gateway tokens the pool holds: 0 while this process has seen some means Redis lost
  them (restarted empty, or flushed). One O(1) command, whatever the number of tokens.

  KEYS[1] tok
  ARGV none
  Reply: the number of tokens (revoked ones included)
]]
--- @include "common"

return redis.call('HLEN', KEYS[1])
