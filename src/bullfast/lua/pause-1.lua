--[[
  pause: pause or resume a queue (BullMQ v6: jobs stay where they are).
  KEYS[1] the queue's meta key
  ARGV[1] P, ARGV[2] '1' pause / '0' resume, ARGV[3] '1' to emit the event (resume is called
  again while legacy ids are left, and emits on its first call, paused or not, as BullMQ)
  Resume also moves a legacy (v5) paused list into wait, at most 7000 ids per call.
  Returns the number of legacy ids still to move (resume is called again until 0).
]]
--@include queue

local P = ARGV[1]
if ARGV[2] == '1' then
  pauseQueue(P)
  return 0
end

rcall('HDEL', P .. 'meta', 'paused')
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
  -- even when the queue is at its global concurrency, as BullMQ: a worker woken for nothing
  -- finds the queue maxed and waits again
  rcall('ZADD', P .. 'marker', '0', '0')
else
  addDelayMarkerIfNeeded(P)
end
if ARGV[3] == '1' then emit(P, 'resumed') end
return rcall('LLEN', legacy)
