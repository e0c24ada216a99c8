--[[
  remove_deduplication_key: end a job's hold on its deduplication id, if it still holds it
  (job.removeDeduplicationKey(): a later job with that id is then added, not ignored).
  KEYS[1] the deduplication key ("<prefix>:<queue>:de:<id>"); ARGV[1] the job id
  Returns 1 if the key named this job and was deleted, else 0.
]]
local rcall = redis.call
if rcall('GET', KEYS[1]) == ARGV[1] then
  return rcall('DEL', KEYS[1])
end
return 0
