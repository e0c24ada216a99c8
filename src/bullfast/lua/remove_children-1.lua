--[[
  remove_children: one bounded step of removing a parent's children (a big job.remove(), a
  fan-out abort): the children met on one page of one of the parent's child groups are
  removed with their own children, except those a worker holds (left alone).
  A child in a sorted-set state (delayed, prioritized, waiting-children, completed, failed)
  goes at once. A child in a list (wait, paused) is left for sweep_children, which walks that
  list once in windows: removing each such child here (LREM) would read the whole list per
  child. The reply names the first queue whose lists need that sweep; once swept (named in
  ARGV[5..]) a child still found in a list is removed here after all (it was pushed back
  after the sweep, or is in active without a lock: rare).
  KEYS[1] the parent's job key
  ARGV[1] group: 'pending' (the dependencies set), 'processed', 'ignored', 'failed'
  ARGV[2] the group's scan cursor ('0' to start)
  ARGV[3] page size (a hint to SSCAN / HSCAN / ZSCAN)
  ARGV[4] 'remove', 'purge' (remove, a child a worker holds too: the sub-tree of a finished
      child goes whole, as in BullMQ), 'unprocessed' (remove as removeUnprocessedChildren: a
      failed pending child stays, and of each child removed only its unprocessed pending
      children go; see removeChildrenOf), or 'check': write nothing, only look for a child a
      worker holds
  ARGV[5] jobs to remove (or look at) at most, counting each child's descendants: the page
      stops early, as children of many children each would hold Redis for long
  ARGV[6] the most descendants a child may have to be taken in this call at all: a bigger one
      stops the page, and the caller removes (or checks) it in steps of its own
  ARGV[7] ('check' only, which removes nothing) the child after which to go on with the page,
      where an earlier call on it stopped ('' from its start; a child no longer in the page:
      from its start too, as children leaving the parent meanwhile shift the page)
  ARGV[8] k, the number of queue prefixes that follow, ARGV[9 .. 8+k] the queue prefixes
      ("<prefix>:<queue>:") whose wait and paused lists were swept, then the job keys of big
      children to leave (a worker holds one of their descendants): counted as held
  Returns {next cursor ('0': the group is done), removed, held by a worker, prefix to sweep or '',
  how the page ended, the last child looked at ('' none; for a big child, that child), and for a
  big child its queue prefix and id}:
  the page ended 0 done, 1 early (the budget; the cursor is the one given, to scan the page
  again, and held is 0: the page's held children are counted once, when it is done), 2 at a big
  child (nothing else of the page written), or in 'check' 3 at a held child.
  Safe to run again after an interruption: what was removed is gone, the rest is found again.
]]
--@include queue
--@include parent
--@include remove

local parentKey = KEYS[1]
local group, cursor, page, mode = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local budget, bigger = tonumber(ARGV[5]), tonumber(ARGV[6])
local resumeAfter = ARGV[7]
local swept, leave = {}, {}
local nSwept = tonumber(ARGV[8])
for i = 9, 8 + nSwept do swept[ARGV[i]] = true end
for i = 9 + nSwept, #ARGV do leave[ARGV[i]] = true end

local reply, children, step
if group == 'pending' then
  reply = rcall('SSCAN', parentKey .. ':dependencies', cursor, 'COUNT', page)
  children, step = reply[2], 1
elseif group == 'processed' or group == 'ignored' then
  local suffix = group == 'processed' and ':processed' or ':failed'
  reply = rcall('HSCAN', parentKey .. suffix, cursor, 'COUNT', page)
  children, step = reply[2], 2
else
  reply = rcall('ZSCAN', parentKey .. ':unsuccessful', cursor, 'COUNT', page)
  children, step = reply[2], 2
end

local placeholder = parentKey .. ':unsealed'
-- what removing a child takes below it (and what a 'check' reads: its pending descendants)
local subtree = (mode == 'remove' or mode == 'purge') and true or 'pending'
-- (removeUnprocessedChildren looks at the child's own lock only, removeJob at its tree's; and
-- removeJob only at the pending children's, as the one-call removal checks them: a finished
-- child goes with its whole sub-tree, a running job in it too, as in BullMQ)
local checksLock = mode ~= 'purge' and (group == 'pending' or mode ~= 'remove')
local checksTree = checksLock and mode ~= 'unprocessed'
local removed, held, toSweep = 0, 0, ''
-- The page's children to remove are found first, so that their own children leave their
-- lists in one pass (takeChildrenOutOfListsAhead), not one pass per child. In page order:
-- {queue prefix, id, the state it was taken out of (nil: in a swept list), what of its
-- children go with it}, or, for a dependency whose job is gone, {false, its key}.
local doomed = {}
local doomedKeys = {}
local taken = 0  -- children of this call that count against the budget
local last = ''
local ended = 0
local big = nil
local first = 1
if resumeAfter ~= '' then
  for i = 1, #children, step do
    if children[i] == resumeAfter then
      first = i + step
      break
    end
  end
end
for i = first, #children, step do
  local childKey = children[i]
  local exists = childKey ~= placeholder and rcall('EXISTS', childKey) == 1
  if mode == 'unprocessed' and childKey ~= placeholder and not exists then
    -- a dependency whose job is gone goes too, as in the one-call path (removeChildrenOf)
    doomed[#doomed + 1] = {false, childKey}
  elseif exists and leave[childKey] then
    held = held + 1
  elseif exists then
    local cP, cid = splitJobKey(childKey)
    if checksLock and rcall('EXISTS', childKey .. ':lock') == 1 then
      held = held + 1
    elseif mode == 'unprocessed' and rcall('ZSCORE', cP .. 'failed', cid) then
      -- a failed child stays (no policy: still a dependency), as in BullMQ
    else
      -- what it costs: itself and its descendants, counted only as far as this call may go
      -- (a child alone in its call may have up to `bigger`)
      local alone = taken == 0
      local cap = alone and bigger or budget
      local descendants = descendantsUpTo(childKey, subtree, cap)
      if descendants > cap or (not alone and descendants >= budget) then
        if alone then big = {cP, cid, childKey} end
        ended = alone and 2 or 1
        break
      end
      if checksTree and descendants > 0 and isLocked(childKey, true) then
        held = held + 1
      else
        budget = budget - 1 - descendants
        taken = taken + 1
        if mode ~= 'check' then
          local prev = removeFromSortedStates(cP, cid)
          if prev or swept[cP] then
            -- (a child with no children is removed without looking for them)
            doomed[#doomed + 1] = {cP, cid, prev, descendants > 0 and subtree}
            if descendants > 0 then doomedKeys[#doomedKeys + 1] = childKey end
          elseif toSweep == '' then
            toSweep = cP
          end
        end
      end
    end
  end
  last = childKey
  if mode == 'check' and held > 0 then
    ended = 3
    break
  end
end
if big then return {cursor, 0, 0, '', 2, big[3], big[1], big[2]} end
if ended == 3 then return {cursor, 0, held, '', 3, last} end
takeChildrenOutOfListsAhead(doomedKeys, subtree)
for _, child in ipairs(doomed) do
  local cP, cid, prev, below = child[1], child[2], child[3], child[4]
  if not cP then
    local goneKey = child[2]
    if rcall('SREM', parentKey .. ':dependencies', goneKey) == 1 then
      softReleaseParentIfReady(parentKey)
      removed = removed + 1
    end
  elseif prev then
    removeJobOutOfState(cP, cid, below, prev)
    removed = removed + 1
  else
    removeJob(cP, cid, below)
    removed = removed + 1
  end
end
if ended == 1 then return {cursor, removed, 0, toSweep, 1, last} end
return {reply[1], removed, held, toSweep, 0, last}
