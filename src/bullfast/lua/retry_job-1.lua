--[[
  retry_job: send a finished job back to run again (job.retry()).
  KEYS[1] the job key
  ARGV[1] P, [2] job id, [3] state it must be in ('failed' | 'completed'), [4] '1' reset
  attemptsMade, [5] '1' reset attemptsStarted
  A child is linked back into its parent's pending dependencies if the parent recorded its
  result or failure (the parent itself is not moved back if it already left waiting-children).
  Returns 0, -1 missing, -3 not in that state.
]]
--@include queue

local P, id, state = ARGV[1], ARGV[2], ARGV[3]
local jobKey = P .. id
if rcall('EXISTS', jobKey) == 0 then return -1 end
if rcall('ZREM', P .. state, id) == 0 then return -3 end

local f = rcall('HMGET', jobKey, 'priority', 'opts')
reopenFinishedJob(jobKey, state)
if ARGV[4] == '1' then rcall('HDEL', jobKey, 'atm', 'attemptsMade') end
if ARGV[5] == '1' then rcall('HDEL', jobKey, 'ats') end

local priority = tonumber(f[1]) or 0
if priority == 0 then
  local lifo = f[2] and string.find(f[2], '"lifo":true', 1, true)
  rcall(lifo and 'RPUSH' or 'LPUSH', P .. 'wait', id)
else
  addPrioritized(P, id, priority)
end
addBaseMarkerIfNeeded(P)
emit(P, 'waiting', 'jobId', id, 'prev', state)
return 0
