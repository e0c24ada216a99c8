--[[
  move_to_active: take up to n jobs for a worker, each exactly as n single moves to active
  would (see fetchJobs in include/worker.lua).
  KEYS[1] the queue's meta key
  ARGV[1] P, [2] now, [3] token base ('0' = no locks), [4] first token number ('' = the
      token base as is, for one job), [5] lockDuration, [6] limiter max ('' = none),
      [7] limiter duration, [8] worker name ('' = none), [9] n
  Returns {taken, rateLimitTtl, nextDelayedDue, dropped ids, id1, hash1, id2, hash2, ...}
]]
--@include queue
--@include parent
--@include remove
--@include worker

local out = {0, 0, 0, {}}
out[1], out[2], out[3], out[4] = fetchJobs(ARGV[1], tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4]),
  tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7]), ARGV[8], tonumber(ARGV[9]), out)
return out
