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
  ARGV[4] 'remove', 'unprocessed' (remove as removeUnprocessedChildren: a failed pending child
      stays, and of each child removed only its unprocessed pending children go; see
      removeChildrenOf), or 'check': write nothing, only count the children a worker holds
  ARGV[5] jobs to remove at most, counting each child's own children (the page stops early:
      a page of children of many children each would hold Redis for long)
  ARGV[6..] queue prefixes ("<prefix>:<queue>:") whose wait and paused lists were swept
  Returns {next cursor ('0': the group is done), removed, held by a worker, prefix to sweep or '',
  1 if the page stopped early (then the cursor is the one given, to scan the page again, and
  held is 0: the page's held children are counted once, when it is done), else 0}
  Safe to run again after an interruption: what was removed is gone, the rest is found again.
]]
--@include queue
--@include parent
--@include remove

local parentKey = KEYS[1]
local group, cursor, page, mode = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local budget = tonumber(ARGV[5])
local swept = {}
for i = 6, #ARGV do swept[ARGV[i]] = true end

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
local subtree = mode == 'unprocessed' and 'pending' or true
local removed, held, toSweep, partial = 0, 0, '', 0
-- The page's children to remove are found first, so that their own children leave their
-- lists in one pass (takeChildrenOutOfListsAhead), not one pass per child. In page order:
-- {queue prefix, id, the state it was taken out of (nil: in a swept list)}, or, for a
-- dependency whose job is gone, {false, its key}.
local doomed = {}
local doomedKeys = {}
for i = 1, #children, step do
  local childKey = children[i]
  local exists = childKey ~= placeholder and rcall('EXISTS', childKey) == 1
  if mode == 'unprocessed' and childKey ~= placeholder and not exists then
    -- a dependency whose job is gone goes too, as in the one-call path (removeChildrenOf)
    doomed[#doomed + 1] = {false, childKey}
  elseif exists then
    local cP, cid = splitJobKey(childKey)
    -- (removeUnprocessedChildren looks at the child's own lock only, removeJob at its tree's;
    -- and removeJob only at the pending children's, as the one-call removal checks them: a
    -- finished child goes with its whole sub-tree, a running job in it too, as in BullMQ)
    if (group == 'pending' or mode ~= 'remove') and isLocked(childKey, mode ~= 'unprocessed') then
      held = held + 1
    elseif mode == 'unprocessed' and rcall('ZSCORE', cP .. 'failed', cid) then
      -- a failed child stays (no policy: still a dependency), as in BullMQ
    elseif mode == 'remove' or mode == 'unprocessed' then
      -- what removing it costs: itself and its own children (not theirs: an estimate)
      local cost = 1 + rcall('SCARD', childKey .. ':dependencies')
      if mode == 'remove' then
        cost = cost + rcall('HLEN', childKey .. ':processed') + rcall('HLEN', childKey .. ':failed')
          + rcall('ZCARD', childKey .. ':unsuccessful')
      end
      if #doomed > 0 and cost > budget then
        partial = 1
        break
      end
      budget = budget - cost
      local prev = removeFromSortedStates(cP, cid)
      if prev or swept[cP] then
        doomed[#doomed + 1] = {cP, cid, prev}
        doomedKeys[#doomedKeys + 1] = childKey
      elseif toSweep == '' then
        toSweep = cP
      end
    end
  end
end
takeChildrenOutOfListsAhead(doomedKeys, subtree)
for _, child in ipairs(doomed) do
  local cP, cid, prev = child[1], child[2], child[3]
  if not cP then
    local goneKey = child[2]
    if rcall('SREM', parentKey .. ':dependencies', goneKey) == 1 then
      softReleaseParentIfReady(parentKey)
      removed = removed + 1
    end
  elseif prev then
    removeJobOutOfState(cP, cid, subtree, prev)
    removed = removed + 1
  else
    removeJob(cP, cid, subtree)
    removed = removed + 1
  end
end
if partial == 1 then return {cursor, removed, 0, toSweep, 1} end
return {reply[1], removed, held, toSweep, 0}
