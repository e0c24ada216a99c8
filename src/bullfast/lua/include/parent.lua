--[[
  Parent helpers ("--@include parent", after "queue").
  A parent is addressed by its job key; its queue prefix is the key without the id, so a parent
  may live in another queue or under another prefix.
]]

-- "bull:A:xyz" -> "bull:A:", "xyz"  (the id is the text after the last colon)
local function splitJobKey(jobKey)
  local P, id = string.match(jobKey, '^(.*:)([^:]*)$')
  return P, id
end

-- Move a parent that has just left waiting-children to where its options send it:
-- delayed (counted from now), else wait (tail: it runs next) or prioritized.
local function releaseParent(parentKey, now)
  local pP, pid = splitJobKey(parentKey)
  local f = rcall('HMGET', parentKey, 'delay', 'priority')
  local delay = tonumber(f[1]) or 0
  local priority = tonumber(f[2]) or 0
  if delay > 0 then
    local due = now + delay
    rcall('ZADD', pP .. 'delayed', due * 4096, pid)
    emit(pP, 'delayed', 'jobId', pid, 'delay', due)
    addDelayMarkerIfNeeded(pP)
  else
    if priority == 0 then
      rcall('RPUSH', pP .. 'wait', pid)
    else
      addPrioritized(pP, pid, priority)
    end
    addBaseMarkerIfNeeded(pP)
    emitUncapped(pP, 'waiting', 'jobId', pid, 'prev', 'waiting-children')
  end
end

-- Release the parent if it waits for children and none is pending any more.
local function releaseParentIfReady(parentKey, now)
  if rcall('SCARD', parentKey .. ':dependencies') == 0 then
    local pP, pid = splitJobKey(parentKey)
    if rcall('EXISTS', parentKey) == 1 and rcall('ZREM', pP .. 'waiting-children', pid) == 1 then
      releaseParent(parentKey, now)
    end
  end
end

-- Whether a fan-out's parent no longer waits for its children: a child's failure policy
-- failed it (deferred failure `defa`, the hash field given) or moved it on.
local function fanOutParentStopped(parentKey, defa)
  if defa then return true end
  local pP, pid = splitJobKey(parentKey)
  return not rcall('ZSCORE', pP .. 'waiting-children', pid)
end

-- The "soft" release of removals: always to the tail of wait, ignoring delay and priority.
local function softReleaseParentIfReady(parentKey)
  if rcall('SCARD', parentKey .. ':dependencies') == 0 then
    local pP, pid = splitJobKey(parentKey)
    if rcall('ZREM', pP .. 'waiting-children', pid) == 1 then
      rcall('RPUSH', pP .. 'wait', pid)
      addBaseMarkerIfNeeded(pP)
      emitUncapped(pP, 'waiting', 'jobId', pid, 'prev', 'waiting-children')
    end
  end
end

-- A child failed for good: apply its policy (protocol 8.3). No flag: the parent keeps waiting.
local function childFailed(jobKey, parentKey, parent, reason, now)
  if not parent then return end
  local pP, pid = splitJobKey(parentKey)
  if parent.fpof then
    if rcall('SREM', parentKey .. ':dependencies', jobKey) == 1 then
      rcall('ZADD', parentKey .. ':unsuccessful', now, jobKey)
      if rcall('EXISTS', parentKey) == 1 then
        local moved = rcall('ZREM', pP .. 'waiting-children', pid) == 1
        if not moved and rcall('ZREM', pP .. 'delayed', pid) == 1 then
          rcall('HSET', parentKey, 'delay', 0)
          moved = true
        end
        if moved then
          rcall('HSET', parentKey, 'defa', 'child ' .. jobKey .. ' failed')
          releaseParent(parentKey, now)
        elseif not rcall('ZSCORE', pP .. 'failed', pid) then
          rcall('HSET', parentKey, 'defa', 'child ' .. jobKey .. ' failed')
        end
      end
    end
  elseif parent.cpof then
    if rcall('SREM', parentKey .. ':dependencies', jobKey) == 1 then
      rcall('HSET', parentKey .. ':failed', jobKey, reason)
      if rcall('EXISTS', parentKey) == 1 and rcall('ZREM', pP .. 'waiting-children', pid) == 1 then
        releaseParent(parentKey, now)
      end
    end
  elseif parent.idof then
    if rcall('SREM', parentKey .. ':dependencies', jobKey) == 1 then
      releaseParentIfReady(parentKey, now)
      rcall('HSET', parentKey .. ':failed', jobKey, reason)
    end
  elseif parent.rdof then
    if rcall('SREM', parentKey .. ':dependencies', jobKey) == 1 then
      releaseParentIfReady(parentKey, now)
    end
  end
end
