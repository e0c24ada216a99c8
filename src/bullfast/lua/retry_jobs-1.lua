--[[
  retry_jobs: send up to ARGV[3] finished jobs (failed or completed) finished at or before
  ARGV[4] back to wait (queue.retry_jobs); children rejoin their parents' pending children.
  KEYS[1] the queue's meta key; ARGV[1] P, [2] state, [3] count, [4] timestamp
  Returns how many are left to retry (the client calls again until 0).
]]
--@include queue

local P, state, count, ts = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local ids = rcall('ZRANGEBYSCORE', P .. state, 0, ts, 'LIMIT', 0, count)
for _, id in ipairs(ids) do
  rcall('ZREM', P .. state, id)
  reopenFinishedJob(P .. id, state)
  rcall('LPUSH', P .. 'wait', id)
  emit(P, 'waiting', 'jobId', id, 'prev', state)
end
if #ids > 0 then addBaseMarkerIfNeeded(P) end
return rcall('ZCOUNT', P .. state, 0, ts)
