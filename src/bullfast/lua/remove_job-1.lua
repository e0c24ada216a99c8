--[[
  remove_job: remove a job, and by default its children, recursively (job.remove()).
  KEYS[1] the job key
  ARGV[1] P (queue prefix "<prefix>:<queue>:"), ARGV[2] job id, ARGV[3] '1' to remove children
  Returns 1 removed (or nothing to remove), 0 the job or a pending descendant is locked.
]]
--@include queue
--@include parent
--@include remove

local P, id = ARGV[1], ARGV[2]
local withChildren = ARGV[3] == '1'
if isLocked(P .. id, withChildren) then return 0 end
removeJob(P, id, withChildren)
return 1
