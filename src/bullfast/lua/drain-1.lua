--[[
  drain: delete the jobs waiting to run (wait, legacy paused, prioritized, and delayed if
  asked), at most ARGV[3] per call, with no events. Active, completed, failed and
  waiting-children jobs stay, and so does the current run of each job scheduler (as BullMQ's).
  KEYS[1] the queue's meta key
  ARGV[1] P, ARGV[2] '1' to include delayed, ARGV[3] max jobs per call
  Returns 1 when jobs may be left to drain (the client calls again), else 0.
]]
--@include queue
--@include parent
--@include remove

local P = ARGV[1]
local budget = tonumber(ARGV[3])
local states = {{'wait', true}, {'paused', true}, {'prioritized', false}}
if ARGV[2] == '1' then states[4] = {'delayed', false} end
local runs = schedulerRuns(P)
for _, state in ipairs(states) do
  budget = hardRemoveState(P, state[1], state[2], budget, runs)
end
if budget > 0 then return 0 end
return 1
