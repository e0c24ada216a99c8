--[[
  Removal helpers ("--@include remove", after "queue" and "parent").
]]

local function deleteJobKeys(jobKey)
  return rcall('DEL', jobKey, jobKey .. ':logs', jobKey .. ':dependencies', jobKey .. ':processed',
    jobKey .. ':failed', jobKey .. ':unsuccessful')
end

-- Take the id out of whichever sorted-set state holds it (O(log n)); its name, or nil.
local function removeFromSortedStates(P, id)
  if rcall('ZREM', P .. 'completed', id) == 1 then return 'completed' end
  if rcall('ZREM', P .. 'waiting-children', id) == 1 then return 'waiting-children' end
  if rcall('ZREM', P .. 'delayed', id) == 1 then return 'delayed' end
  if rcall('ZREM', P .. 'failed', id) == 1 then return 'failed' end
  if rcall('ZREM', P .. 'prioritized', id) == 1 then return 'prioritized' end
  return nil
end

-- Take the id out of whichever state holds it; returns that state's name. The lists come
-- last, each LREM stopping at the id (as BullMQ's: a job just added is at the head of wait):
-- one that is not there reads the whole list, so removing many jobs from a long list this way
-- can cost their number times its length (big removals use remove_children and
-- sweep_children; drain, obliterate and clean take the ids out of the list they read them
-- from, in one pass).
local function removeFromAnyState(P, id)
  local sorted = removeFromSortedStates(P, id)
  if sorted then return sorted end
  if rcall('LREM', P .. 'wait', 1, id) > 0 then return 'wait' end
  if rcall('LREM', P .. 'paused', 1, id) > 0 then return 'paused' end
  if rcall('LREM', P .. 'active', 1, id) > 0 then return 'active' end
  return 'unknown'
end

local function removeDeduplicationKey(P, jobKey)
  local deid = rcall('HGET', jobKey, 'deid')
  if deid then
    local deKey = P .. 'de:' .. deid
    local _, id = splitJobKey(jobKey)
    if rcall('GET', deKey) == id then
      rcall('DEL', deKey, P .. 'dn:' .. deid)
    end
  end
end

local hardRemoveJob

-- Unlink a job being removed from its parent's pending dependencies. If that was the last
-- one and the parent waits for children: a soft removal releases the parent to its wait;
-- a hard removal (drain, obliterate) deletes a parent of the same queue too and releases one
-- of another queue without an event.
local function unlinkFromParent(P, jobKey, hard)
  local parentKey = rcall('HGET', jobKey, 'parentKey')
  if not parentKey then return end
  local dk = parentKey .. ':dependencies'
  if rcall('SREM', dk, jobKey) == 1 and rcall('SCARD', dk) == 0 then
    if not hard then
      softReleaseParentIfReady(parentKey)
      return
    end
    local pP, pid = splitJobKey(parentKey)
    if rcall('ZREM', pP .. 'waiting-children', pid) == 1 then
      if pP == P then
        hardRemoveJob(pP, pid, true)  -- (its state entry just went: no list to search)
      else
        rcall('RPUSH', pP .. 'wait', pid)
        addBaseMarkerIfNeeded(pP)
      end
    end
  end
end

-- Drain, obliterate and clean: the job's keys go, with no event, and its state entry. With
-- `listed` true the caller takes the id out of the list it read it from, which one LREM per
-- job would read whole (seconds of Redis time, quadratic, for a queue of 20,000 jobs);
-- sorted-set entries are taken here.
hardRemoveJob = function(P, id, listed)
  local jobKey = P .. id
  unlinkFromParent(P, jobKey, true)
  removeDeduplicationKey(P, jobKey)
  if listed then removeFromSortedStates(P, id) else removeFromAnyState(P, id) end
  deleteJobKeys(jobKey)
  rcall('DEL', jobKey .. ':lock')
end

-- Hard-remove up to `budget` jobs of one state (a list or a zset); returns what budget is left
-- and whether the state is now empty. The ids in `keep` (a set, or nil) stay, and are not
-- counted: a list's end up at its head, in their order.
local function hardRemoveState(P, name, isList, budget, keep)
  local key = P .. name
  local kept = {}
  while budget > 0 do
    local skip = #kept
    local ids
    if isList then
      ids = rcall('LRANGE', key, skip, skip + math.min(budget, 1000) - 1)
    else
      ids = rcall('ZRANGE', key, skip, skip + math.min(budget, 1000) - 1)
    end
    if #ids == 0 then return budget, true end
    for _, id in ipairs(ids) do
      if keep and keep[id] then
        kept[#kept + 1] = id
      else
        hardRemoveJob(P, id, isList)
        budget = budget - 1
      end
    end
    -- the ids read from a list's head leave it together (removals only ever push to the
    -- tail of another queue's wait); the kept ones go back in front
    if isList then
      rcall('LTRIM', key, skip + #ids, -1)
      for i = #kept, 1, -1 do rcall('LPUSH', key, kept[i]) end
    end
  end
  return 0, rcall(isList and 'LLEN' or 'ZCARD', key) == #kept
end

-- The current run of every job scheduler of queue P ("repeat:<key>:<millis>", BullMQ's): drain
-- must leave it, or the scheduler never runs again (its next run is made when this one is).
local function schedulerRuns(P)
  local runs = {}
  local schedulers = rcall('ZRANGE', P .. 'repeat', 0, -1, 'WITHSCORES')
  for i = 1, #schedulers, 2 do
    runs['repeat:' .. schedulers[i] .. ':' .. schedulers[i + 1]] = true
  end
  return runs
end

local function isLocked(jobKey, withChildren)
  if rcall('EXISTS', jobKey .. ':lock') == 1 then return true end
  if withChildren then
    for _, childKey in ipairs(rcall('SMEMBERS', jobKey .. ':dependencies')) do
      if isLocked(childKey, true) then return true end
    end
  end
  return false
end

local removeJob
local removeJobOutOfState

-- Take the ids `ids` (of queue P, in no sorted-set state) out of P's lists, each list read at
-- most once and only as far as the last of them in it: id -> the state it was in. A job's many
-- children each taken out by an LREM would each read the list as far as itself (quadratic).
local function takeOutOfLists(P, ids)
  local wanted, found, left = {}, {}, 0
  for _, id in ipairs(ids) do
    if not wanted[id] then
      wanted[id] = true
      left = left + 1
    end
  end
  local marker = 'bullfast:removing'
  for _, state in ipairs({'wait', 'paused', 'active'}) do
    if left == 0 then break end
    local key, marked = P .. state, 0
    for id, index in pairs(positionsInList(key, wanted, left)) do
      found[id] = state
      wanted[id] = nil  -- (found: not looked for in the next list)
      rcall('LSET', key, index, marker)
      marked, left = marked + 1, left - 1
    end
    if marked > 0 then rcall('LREM', key, marked, marker) end
  end
  return found
end

-- A pending child as BullMQ's removeUnprocessedChildren takes it: not one a worker holds (its
-- own lock only: a child goes even while one of its own children runs, which is then left
-- without its parent, as in BullMQ), nor one that failed (with no policy still a dependency).
local function isUnprocessed(childKey)
  local cP, cid = splitJobKey(childKey)
  return not isLocked(childKey, false) and not rcall('ZSCORE', cP .. 'failed', cid)
end

-- A job's children as removeChildrenOf takes them: every group (withChildren true), or only
-- the pending ones ('pending').
local function childrenOf(jobKey, withChildren)
  local children = {}
  local groups
  if withChildren == 'pending' then
    groups = {rcall('SMEMBERS', jobKey .. ':dependencies')}
  else
    groups = {rcall('HKEYS', jobKey .. ':processed'), rcall('HKEYS', jobKey .. ':failed'),
      rcall('ZRANGE', jobKey .. ':unsuccessful', 0, -1), rcall('SMEMBERS', jobKey .. ':dependencies')}
  end
  for _, group in ipairs(groups) do
    for _, childKey in ipairs(group) do children[#children + 1] = childKey end
  end
  return children
end

-- How many descendants removing a job with its children (withChildren as for childrenOf)
-- would remove, counted only up to `cap`: more are reported as cap + 1. The count reads about
-- `cap` entries however big the tree is, so that a caller learns whether a removal fits in one
-- short call before it reads the whole tree (a child of a map-reduce root may have 100,000
-- children: removing it in one call held Redis for seconds).
local function descendantsUpTo(jobKey, withChildren, cap)
  local count, frontier = 0, {jobKey}
  while #frontier > 0 do
    local key = table.remove(frontier)
    local n = rcall('SCARD', key .. ':dependencies')
    if withChildren ~= 'pending' then
      n = n + rcall('HLEN', key .. ':processed') + rcall('HLEN', key .. ':failed')
        + rcall('ZCARD', key .. ':unsuccessful')
    end
    count = count + n
    if count > cap then return cap + 1 end
    if n > 0 then
      for _, childKey in ipairs(childrenOf(key, withChildren)) do frontier[#frontier + 1] = childKey end
    end
  end
  return count
end

-- The jobs of this call taken out of their list ahead of their removal: job key -> the list
-- (state) they were in, or false for one looked for and in no list (a sorted-set state, gone,
-- or one that stays).
local outOfLists = {}

-- Take out of their lists, in one pass over each list, the jobs among `jobKeys` that are in
-- one and that a removal of the kind `withChildren` will take: removing each by LREM would
-- read the list as far as itself, once per job (quadratic). Jobs in a sorted-set state are
-- left in it, taken out in their turn as removeJob does.
local function takeOutOfListsAhead(jobKeys, withChildren)
  local byQueue, queues = {}, {}
  for _, jobKey in ipairs(jobKeys) do
    if outOfLists[jobKey] == nil then
      outOfLists[jobKey] = false
      if (withChildren ~= 'pending' or isUnprocessed(jobKey)) and rcall('EXISTS', jobKey) == 1 then
        local cP, cid = splitJobKey(jobKey)
        if not (rcall('ZSCORE', cP .. 'completed', cid) or rcall('ZSCORE', cP .. 'waiting-children', cid)
            or rcall('ZSCORE', cP .. 'delayed', cid) or rcall('ZSCORE', cP .. 'failed', cid)
            or rcall('ZSCORE', cP .. 'prioritized', cid)) then
          local ids = listIn(byQueue, queues, cP)
          ids[#ids + 1] = cid
        end
      end
    end
  end
  for _, cP in ipairs(queues) do
    local found = takeOutOfLists(cP, byQueue[cP])
    for _, cid in ipairs(byQueue[cP]) do outOfLists[cP .. cid] = found[cid] or 'unknown' end
  end
end

-- Before removing several jobs with their children (a page, a window of a list): their
-- children leave their lists together, a pass per queue for all of them, not one per job.
local function takeChildrenOutOfListsAhead(jobKeys, withChildren)
  if not withChildren then return end
  local all = {}
  for _, jobKey in ipairs(jobKeys) do
    for _, childKey in ipairs(childrenOf(jobKey, withChildren)) do all[#all + 1] = childKey end
  end
  if #all > 10 then takeOutOfListsAhead(all, withChildren) end
end

-- Remove a job's children: every group (withChildren true), or only the unprocessed pending
-- ones, and of those again only their unprocessed pending ones (withChildren 'pending', BullMQ's
-- ignoreProcessed: what finished stays). Returns how many children were taken.
local function removeChildrenOf(jobKey, withChildren)
  local onlyPending = withChildren == 'pending'
  local children = childrenOf(jobKey, withChildren)
  -- the children in a list leave it first, a pass over each list (their removal below then
  -- reads none); those in a sorted-set state leave it in their turn, as in removeJob
  if #children > 10 then takeOutOfListsAhead(children, withChildren) end
  local taken = 0
  for _, childKey in ipairs(children) do
    local cP, cid = splitJobKey(childKey)
    local prev = outOfLists[childKey] or nil
    if not onlyPending then
      if prev then
        removeJobOutOfState(cP, cid, true, prev)
        taken = taken + 1
      elseif rcall('EXISTS', childKey) == 1 then
        removeJob(cP, cid, true)
        taken = taken + 1
      end
    elseif prev or isUnprocessed(childKey) then
      if prev then
        removeJobOutOfState(cP, cid, 'pending', prev)
      elseif rcall('EXISTS', childKey) == 1 then
        removeJob(cP, cid, 'pending')
      elseif childKey == jobKey .. ':unsealed' then
        taken = taken - 1  -- an open fan-out's placeholder is no child: it stays
      elseif rcall('SREM', jobKey .. ':dependencies', childKey) == 1 then
        softReleaseParentIfReady(jobKey)  -- a dependency whose job is gone goes too
      end
      taken = taken + 1
    end
  end
  return taken
end

-- job.remove(): children first (so removing the last pending one may release the parent, as
-- BullMQ does), then the job itself, with a 'removed' event if its hash existed.
-- withChildren: false, true (all of them) or 'pending' (see removeChildrenOf).
removeJob = function(P, id, withChildren)
  local jobKey = P .. id
  unlinkFromParent(P, jobKey, false)
  if withChildren then removeChildrenOf(jobKey, withChildren) end
  local prev = removeFromAnyState(P, id)
  removeDeduplicationKey(P, jobKey)
  if deleteJobKeys(jobKey) > 0 then
    emit(P, 'removed', 'jobId', id, 'prev', prev)
  end
end

-- removeJob for a job its caller already took out of its state `prev` (so no list is read).
removeJobOutOfState = function(P, id, withChildren, prev)
  local jobKey = P .. id
  unlinkFromParent(P, jobKey, false)
  if withChildren then removeChildrenOf(jobKey, withChildren) end
  removeDeduplicationKey(P, jobKey)
  if deleteJobKeys(jobKey) > 0 then
    emit(P, 'removed', 'jobId', id, 'prev', prev)
  end
end
