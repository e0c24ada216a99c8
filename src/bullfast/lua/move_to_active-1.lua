--[[
  move_to_active: take up to n jobs for a worker, each exactly as n single moves to active
  would (see fetchJobs in include/worker.lua).
  KEYS[1] the queue's meta key
  ARGV[1] P, [2] now, [3] lock token ('0' = no locks), [4] lockDuration, [5] limiter max
      ('' = none), [6] limiter duration, [7] worker name ('' = none), [8] n
  Returns {taken, rateLimitTtl, nextDelayedDue, dropped ids, jobs} (see fetchJobs; jobs only
  when some were taken)
]]
--@include queue
--@include parent
--@include remove
--@include worker

local jobs = {}
local reply = {fetchJobs(ARGV[1], tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4]),
  tonumber(ARGV[5]), tonumber(ARGV[6]), ARGV[7], tonumber(ARGV[8]), jobs)}
if #jobs > 0 then reply[5] = cmsgpack.pack(jobs) end
return reply
