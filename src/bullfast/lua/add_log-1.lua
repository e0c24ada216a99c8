--[[
  add_log: append a line to a job's log, keeping the last keepLogs lines if asked.
  KEYS[1] the job key; ARGV[1] the line, ARGV[2] keepLogs ('' or 0 = all)
  Returns the number of lines, or -1 if the job does not exist.
]]
local rcall = redis.call
local jobKey = KEYS[1]
if rcall('EXISTS', jobKey) == 0 then return -1 end
local n = rcall('RPUSH', jobKey .. ':logs', ARGV[1])
local keep = tonumber(ARGV[2])
if keep and keep > 0 then  -- 0 keeps all, as BullMQ sends it ('')
  rcall('LTRIM', jobKey .. ':logs', -keep, -1)
  return math.min(n, keep)
end
return n
