--[[
  change_priority: give a job a new priority; a waiting one is re-queued accordingly.
  KEYS[1] the job key; ARGV[1] P, [2] job id, [3] priority, [4] '1' lifo
  Returns 0, or -1 missing.
]]
--@include queue

local P, id, priority, lifo = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4] == '1'
if rcall('EXISTS', P .. id) == 0 then return -1 end
-- (from the tail, where the next jobs to run are, stopping at the id, as BullMQ's)
local waiting = rcall('ZREM', P .. 'prioritized', id) == 1 or rcall('LREM', P .. 'wait', -1, id) > 0
if waiting then
  if priority == 0 then
    rcall(lifo and 'RPUSH' or 'LPUSH', P .. 'wait', id)
  elseif lifo then
    rcall('ZADD', P .. 'prioritized', priority * 4294967296, id)
  else
    addPrioritized(P, id, priority)
  end
  addBaseMarkerIfNeeded(P)
end
rcall('HSET', P .. id, 'priority', priority)
return 0
