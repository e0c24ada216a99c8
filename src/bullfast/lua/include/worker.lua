--[[
  Helpers of the worker's scripts ("--@include worker", after "queue", "parent", "remove").
]]

-- Due delayed jobs (at most 1000) go to wait or prioritized.
local function promoteDelayedJobs(P, now)
  local due = rcall('ZRANGEBYSCORE', P .. 'delayed', 0, (now + 1) * 4096 - 1, 'LIMIT', 0, 1000)
  if #due == 0 then return end
  for _, id in ipairs(due) do
    rcall('ZREM', P .. 'delayed', id)
    local priority = tonumber(rcall('HGET', P .. id, 'priority')) or 0
    if priority == 0 then
      rcall('LPUSH', P .. 'wait', id)
    else
      addPrioritized(P, id, priority)
    end
    emitUncapped(P, 'waiting', 'jobId', id, 'prev', 'delayed')
    rcall('HSET', P .. id, 'delay', 0)
  end
  addBaseMarkerIfNeeded(P)
end

local function nextDelayedDue(P)
  local first = rcall('ZRANGE', P .. 'delayed', 0, 0, 'WITHSCORES')
  if first[2] then return math.floor(tonumber(first[2]) / 4096) end
  return 0
end

-- The lock check of every transition of an active job: -2 no lock, -6 another worker's.
local function takeLock(P, id, jobKey, token)
  if token == '0' then return 0 end
  local lock = rcall('GET', jobKey .. ':lock')
  if not lock then return -2 end
  if lock ~= token then return -6 end
  rcall('DEL', jobKey .. ':lock')
  rcall('SREM', P .. 'stalled', id)
  return 0
end

-- A finished job leaving the set by retention; a failed child still pending (no policy) is
-- unlinked from its parent, which a soft release may then run.
local function dropFinishedJob(P, id)
  local jobKey = P .. id
  local parentKey = rcall('HGET', jobKey, 'parentKey')
  deleteJobKeys(jobKey)
  if parentKey and rcall('SREM', parentKey .. ':dependencies', jobKey) == 1 then
    softReleaseParentIfReady(parentKey)
  end
end

-- removeOnComplete / removeOnFail: "count|age|limit" (count -1 keeps all, 0 keeps none).
local function applyRetention(P, set, id, keep, now)
  local count, age, limit = string.match(keep, '^([^|]*)|([^|]*)|([^|]*)$')
  count = tonumber(count) or -1
  age = tonumber(age)
  limit = tonumber(limit) or 1000
  local setKey = P .. set
  if age then
    local old = rcall('ZRANGEBYSCORE', setKey, 0, now - age * 1000, 'LIMIT', 0, limit)
    for _, oldId in ipairs(old) do
      if oldId ~= id then
        dropFinishedJob(P, oldId)
        rcall('ZREM', setKey, oldId)
      end
    end
  end
  if count > 0 then
    -- keep the newest `count` (the job just finished among them, also on a same-ms tie)
    local candidates = rcall('ZREVRANGE', setKey, count - 1, -1)
    local keepOne = true
    for _, oldId in ipairs(candidates) do
      if oldId == id then keepOne = false end
    end
    for _, oldId in ipairs(candidates) do
      if oldId ~= id then
        if keepOne then
          keepOne = false
        else
          dropFinishedJob(P, oldId)
          rcall('ZREM', setKey, oldId)
        end
      end
    end
  end
end
