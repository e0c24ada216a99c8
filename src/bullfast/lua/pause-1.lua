--[[
  pause: pause or resume a queue (BullMQ v6: jobs stay where they are).
  KEYS[1] the queue's meta key
  ARGV[1] P, ARGV[2] '1' pause / '0' resume
  Resume also moves a legacy (v5) paused list into wait, at most 7000 ids per call.
  Returns the number of legacy ids still to move (resume is called again until 0).
]]
--@include queue

local P = ARGV[1]
if ARGV[2] == '1' then
  pauseQueue(P)
  return 0
end

local wasPaused = rcall('HDEL', P .. 'meta', 'paused') == 1
local legacy = P .. 'paused'
if rcall('EXISTS', legacy) == 1 then
  if rcall('EXISTS', P .. 'wait') == 0 then
    rcall('RENAME', legacy, P .. 'wait')
  else
    -- as BullMQ: the head of the legacy list goes to the tail of wait, in order (they were
    -- queued before anything in wait, and the tail runs next)
    local ids = rcall('LRANGE', legacy, 0, 6999)
    rcall('RPUSH', P .. 'wait', unpack(ids))
    rcall('LTRIM', legacy, #ids, -1)
  end
end
if rcall('LLEN', P .. 'wait') + rcall('ZCARD', P .. 'prioritized') > 0 then
  addBaseMarkerIfNeeded(P)
else
  addDelayMarkerIfNeeded(P)
end
if wasPaused then emit(P, 'resumed') end
return rcall('LLEN', legacy)
