--[[
  move_to_active: take up to n jobs for a worker, each exactly as n single moves to active
  would (see fetchJobs in include/worker.lua).
  KEYS[1] the queue's meta key
  ARGV[1] P, [2] now, [3] lock token ('0' = no locks), [4] lockDuration, [5] limiter max
      ('' = none), [6] limiter duration, [7] worker name ('' = none), [8] n
  Returns {taken, rateLimitTtl, nextDelayedDue, dropped ids, id1, hash1, id2, hash2, ...}
]]
--@include queue
--@include parent
--@include remove
--@include worker

local out = {0, 0, 0, {}}
out[1], out[2], out[3], out[4] = fetchJobs(ARGV[1], tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4]),
  tonumber(ARGV[5]), tonumber(ARGV[6]), ARGV[7], tonumber(ARGV[8]), out)
return out
