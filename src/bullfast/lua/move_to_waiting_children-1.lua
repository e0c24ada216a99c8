--[[
  move_to_waiting_children: a running parent waits for the children it just added.
  KEYS[1] the job key
  ARGV[1] P, [2] job id, [3] token, [4] child key ('' = any pending child), [5] now
  Returns 0 moved, 1 nothing to wait for (the job stays active), or -1 / -2 / -3 / -6 / -9.
]]
--@include queue
--@include parent
--@include remove
--@include worker

local P, id, token, childKey, now = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local jobKey = P .. id
if rcall('EXISTS', jobKey) == 0 then return -1 end
if rcall('ZCARD', jobKey .. ':unsuccessful') ~= 0 then return -9 end
local pending
if childKey ~= '' then
  pending = rcall('SISMEMBER', jobKey .. ':dependencies', childKey) == 1
else
  pending = rcall('SCARD', jobKey .. ':dependencies') > 0
end
if not pending then return 1 end
local locked = takeLock(P, id, jobKey, token)
if locked < 0 then return locked end
if rcall('LREM', P .. 'active', -1, id) == 0 then return -3 end
rcall('ZADD', P .. 'waiting-children', now, id)
emit(P, 'waiting-children', 'jobId', id, 'prev', 'active')
return 0
