--[[
  get_state: the state of a job, first hit in BullMQ's order.
  KEYS[1] the job key; ARGV[1] P, ARGV[2] job id
  Returns completed | failed | delayed | prioritized | active | waiting | waiting-children | unknown
]]
local rcall = redis.call
local P, id = ARGV[1], ARGV[2]
if rcall('ZSCORE', P .. 'completed', id) then return 'completed' end
if rcall('ZSCORE', P .. 'failed', id) then return 'failed' end
if rcall('ZSCORE', P .. 'delayed', id) then return 'delayed' end
if rcall('ZSCORE', P .. 'prioritized', id) then return 'prioritized' end
if rcall('LPOS', P .. 'active', id) then return 'active' end
if rcall('LPOS', P .. 'wait', id) then return 'waiting' end
if rcall('LPOS', P .. 'paused', id) then return 'waiting' end
if rcall('ZSCORE', P .. 'waiting-children', id) then return 'waiting-children' end
return 'unknown'
