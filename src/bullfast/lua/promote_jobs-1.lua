--[[
  promote_jobs: run up to ARGV[2] delayed jobs now (queue.promote_jobs).
  KEYS[1] the queue's meta key; ARGV[1] P, [2] count
  Returns how many delayed jobs are left (the client calls again until 0).
]]
--@include queue

local P, count = ARGV[1], tonumber(ARGV[2])
local ids = rcall('ZRANGE', P .. 'delayed', 0, count - 1)
for _, id in ipairs(ids) do
  rcall('ZREM', P .. 'delayed', id)
  rcall('LPUSH', P .. 'wait', id)
  emit(P, 'waiting', 'jobId', id, 'prev', 'delayed')
end
if #ids > 0 then addBaseMarkerIfNeeded(P) end
return rcall('ZCARD', P .. 'delayed')
