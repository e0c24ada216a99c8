--[[
  update_progress: store a job's progress and announce it.
  KEYS[1] the job key; ARGV[1] P, ARGV[2] job id, ARGV[3] progress (JSON text)
  Returns 0, or -1 if the job does not exist.
]]
--@include queue

local jobKey = KEYS[1]
if rcall('EXISTS', jobKey) == 0 then return -1 end
rcall('HSET', jobKey, 'progress', ARGV[3])
emit(ARGV[1], 'progress', 'jobId', ARGV[2], 'data', ARGV[3])
return 0
