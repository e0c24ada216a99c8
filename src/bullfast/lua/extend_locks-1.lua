--[[
  extend_locks: renew the locks of a worker's active jobs in one call.
  KEYS[1] the queue's meta key
  ARGV[1] P, [2] lockDuration, then pairs: job id, token
  Returns the ids whose lock was not this worker's any more (lost).
]]
local rcall = redis.call
local P, duration = ARGV[1], ARGV[2]
local lost = {}
for i = 3, #ARGV, 2 do
  local id, token = ARGV[i], ARGV[i + 1]
  local lockKey = P .. id .. ':lock'
  if rcall('GET', lockKey) == token then
    rcall('SET', lockKey, token, 'PX', duration)
    rcall('SREM', P .. 'stalled', id)
  else
    lost[#lost + 1] = id
  end
end
return lost
