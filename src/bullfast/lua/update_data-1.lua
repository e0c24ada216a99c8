--[[
  update_data: replace a job's data.
  KEYS[1] the job key; ARGV[1] data (JSON text)
  Returns 0, or -1 if the job does not exist.
]]
local rcall = redis.call
if rcall('EXISTS', KEYS[1]) == 0 then return -1 end
rcall('HSET', KEYS[1], 'data', ARGV[1])
return 0
