--[[
  obliterate: delete a paused queue and all its jobs, at most ARGV[3] jobs per call.
  KEYS[1] the queue's meta key
  ARGV[1] P, ARGV[2] '1' force (also when jobs are active), ARGV[3] max jobs per call,
  ARGV[4] '1' pause the queue first (the first call), after the check for active jobs, so that
  a refused obliterate changes nothing
  Returns -1 not paused, -2 active jobs and no force, 1 call again, 0 done (queue keys deleted).
  Unlike BullMQ 6.7, parents in waiting-children are deleted too. The job schedulers go with
  the queue (the 'repeat' set and each scheduler's 'repeat:<key>' hash, as BullMQ's).
]]
--@include queue
--@include parent
--@include remove

local P = ARGV[1]
local budget = tonumber(ARGV[3])
if ARGV[2] ~= '1' and rcall('LLEN', P .. 'active') > 0 then return -2 end
if ARGV[4] == '1' then
  pauseQueue(P)
elseif rcall('HEXISTS', P .. 'meta', 'paused') == 0 then
  return -1
end

local function drainSet(name, isList)
  local empty
  budget, empty = hardRemoveState(P, name, isList, budget)
  return empty
end

local done = drainSet('active', true) and drainSet('wait', true) and drainSet('paused', true)
  and drainSet('prioritized', false) and drainSet('delayed', false)
  and drainSet('waiting-children', false) and drainSet('completed', false)
  and drainSet('failed', false)
if not done then return 1 end
for _, scheduler in ipairs(rcall('ZRANGE', P .. 'repeat', 0, -1)) do
  rcall('DEL', P .. 'repeat:' .. scheduler)
end
rcall('DEL', P .. 'events', P .. 'delay', P .. 'priority', P .. 'stalled-check', P .. 'stalled',
  P .. 'id', P .. 'pc', P .. 'marker', P .. 'meta', P .. 'metrics:completed',
  P .. 'metrics:completed:data', P .. 'metrics:failed', P .. 'metrics:failed:data',
  P .. 'limiter', P .. 'repeat')
return 0
