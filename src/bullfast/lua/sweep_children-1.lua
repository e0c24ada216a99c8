--[[
  sweep_children: one window of a walk along a queue list (wait or paused), from the head,
  removing the jobs in it that are children of one parent (with their own children), except
  those a worker holds. The walk reads each entry once however many children there are; an
  entry of a removed child is overwritten in place with a marker, and one LREM from the
  nearer end takes the window's markers out, so a window costs its size plus at most half
  the list's length of a fast in-server scan, never one scan per child.
  The next window starts at the returned index: entries pushed at the head meanwhile only
  make the walk read some entries twice; a child it misses (an entry removed meanwhile by
  someone else shifts the list) is removed by remove_children, which runs after the walk.
  KEYS[1] the list ("<prefix>:<queue>:wait" or ":paused")
  ARGV[1] the queue prefix "<prefix>:<queue>:", ARGV[2] the parent's job key,
  ARGV[3] 'pending' (only children the parent still waits for), 'unprocessed' (the same, each
      removed with only its unprocessed pending children, see removeChildrenOf), 'all', or
      'purge' (all, those a worker holds too: the sub-tree of a finished job goes whole),
  ARGV[4] start index, ARGV[5] window size, ARGV[6] state name for the 'removed' events,
  ARGV[7] jobs to remove at most, counting each child's descendants (the window stops early)
  ARGV[8] the most descendants a child may have to be removed here: a bigger one stays in the
      list, for remove_children to find and its caller to remove in steps
  Returns {next start index, or -1 when the walk reached the end of the list; removed}
]]
--@include queue
--@include parent
--@include remove

local list, P, parentKey, which = KEYS[1], ARGV[1], ARGV[2], ARGV[3]
local start, window, prev = tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6]
local ids = rcall('LRANGE', list, start, start + window - 1)
-- this has at least five ':'-separated parts: bullfast refuses ids with ':', BullMQ all but
-- three-part ones, so no job has this id
local marker = 'bf:sweeping:' .. parentKey
local dependencies = parentKey .. ':dependencies'

-- every child of the window is marked before any is removed: removing one also removes its
-- own children, and those may be entries of this list, which would shift the later indexes
local subtree = which == 'unprocessed' and 'pending' or true
local budget, bigger = tonumber(ARGV[7]), tonumber(ARGV[8])
local doomed = {}
local withChildren = {}  -- id -> subtree, for the doomed jobs that have children
local scanned = 0
for i, id in ipairs(ids) do
  local jobKey = P .. id
  if rcall('HGET', jobKey, 'parentKey') == parentKey
      and (which == 'all' or which == 'purge' or rcall('SISMEMBER', dependencies, jobKey) == 1) then
    -- what removing it costs: itself and its descendants (counted only up to `bigger`)
    local descendants = descendantsUpTo(jobKey, subtree, bigger)
    if descendants <= bigger and (which == 'purge' or not isLocked(jobKey, descendants > 0)) then
      local cost = 1 + descendants
      if #doomed > 0 and cost > budget then break end
      budget = budget - cost
      rcall('LSET', list, start + i - 1, marker)
      doomed[#doomed + 1] = id
      -- (a job with no children is removed without looking for them: ~8 commands fewer)
      if descendants > 0 then withChildren[id] = subtree end
    end
  end
  scanned = i
end
-- their own children leave their lists first, in one pass for the whole window
local parentKeys = {}
for _, id in ipairs(doomed) do
  if withChildren[id] then parentKeys[#parentKeys + 1] = P .. id end
end
takeChildrenOutOfListsAhead(parentKeys, subtree)
for _, id in ipairs(doomed) do removeJobOutOfState(P, id, withChildren[id] or false, prev) end
local removed = #doomed
if removed > 0 then
  local length = rcall('LLEN', list)
  if start + #ids / 2 <= length / 2 then
    rcall('LREM', list, removed, marker)
  else
    rcall('LREM', list, -removed, marker)
  end
end
if scanned == #ids and #ids < window then return {-1, removed} end
return {start + scanned - removed, removed}
