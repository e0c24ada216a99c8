--[[
  change_delay: a delayed job becomes due `delay` ms from now (now, for a delay <= 0, as BullMQ).
  KEYS[1] the job key; ARGV[1] P, [2] job id, [3] delay (ms), [4] now
  Returns 0, -1 missing, -3 not delayed.
]]
--@include queue

local P, id, delay, now = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
if rcall('EXISTS', P .. id) == 0 then return -1 end
if not rcall('ZSCORE', P .. 'delayed', id) then return -3 end
local due = delay > 0 and now + delay or now
rcall('ZADD', P .. 'delayed', delayedScore(P, due), id)
rcall('HSET', P .. id, 'delay', delay)
emit(P, 'delayed', 'jobId', id, 'delay', due)
addDelayMarkerIfNeeded(P)
return 0
