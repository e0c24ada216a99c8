--[[
  get_states: the states of jobs of one queue (get_state, get_job_state: one; get_flow: a level
  of a tree), each the first hit in BullMQ's order, with a few commands a state rather than a
  few a job. A list is read once when many of the jobs may be in it; an LPOS a job would read up
  to all of it each time.
  KEYS[1] a key of the queue (for the routing); ARGV[1] P, ARGV[2..] job ids
  Returns the states, in the order of the ids.
]]
--@include queue

local P = ARGV[1]
local out, todo = {}, {}
for i = 2, #ARGV do todo[#todo + 1] = i end

local function inSortedSet(name, state)
  local left = {}
  for s = 1, #todo, 1000 do  -- (unpack takes a few thousand values at most)
    local ids = {}
    for k = s, math.min(s + 999, #todo) do ids[#ids + 1] = ARGV[todo[k]] end
    local scores = rcall('ZMSCORE', P .. name, unpack(ids))
    for k = 1, #ids do
      local i = todo[s + k - 1]
      if scores[k] then out[i - 1] = state else left[#left + 1] = i end
    end
  end
  todo = left
end

local function inList(name, state)
  if #todo == 0 then return end
  local key = P .. name
  local left = {}
  if #todo > 50 then
    local wanted, count = {}, 0
    for _, i in ipairs(todo) do
      if not wanted[ARGV[i]] then
        wanted[ARGV[i]] = true
        count = count + 1
      end
    end
    local found = positionsInList(key, wanted, count)
    for _, i in ipairs(todo) do
      if found[ARGV[i]] then out[i - 1] = state else left[#left + 1] = i end
    end
  else
    for _, i in ipairs(todo) do
      if rcall('LPOS', key, ARGV[i]) then out[i - 1] = state else left[#left + 1] = i end
    end
  end
  todo = left
end

inSortedSet('completed', 'completed')
inSortedSet('failed', 'failed')
inSortedSet('delayed', 'delayed')
inSortedSet('prioritized', 'prioritized')
inList('active', 'active')
inList('wait', 'waiting')
inList('paused', 'waiting')
inSortedSet('waiting-children', 'waiting-children')
for _, i in ipairs(todo) do out[i - 1] = 'unknown' end
return out
