--[[
  promote: run a delayed job now.
  KEYS[1] the job key; ARGV[1] P, [2] job id
  Returns 0, or -3 if the job is not delayed.
]]
--@include queue

local P, id = ARGV[1], ARGV[2]
if rcall('ZREM', P .. 'delayed', id) == 0 then return -3 end
local priority = tonumber(rcall('HGET', P .. id, 'priority')) or 0
if priority == 0 then
  rcall('LPUSH', P .. 'wait', id)
else
  addPrioritized(P, id, priority)
end
addBaseMarkerIfNeeded(P)
emit(P, 'waiting', 'jobId', id, 'prev', 'delayed')
rcall('HSET', P .. id, 'delay', 0)
return 0
