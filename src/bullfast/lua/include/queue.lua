--[[
  Queue-level helpers shared by the command scripts (pulled in with "--@include queue").
  A queue is addressed by its prefix P = "<prefix>:<queueName>:" (trailing colon included).
  Every helper caches what it reads about a queue in the table Q[P] for the length of one call,
  so a bulk call reads each queue's meta once.
]]

local rcall = redis.call
local Q = {}

-- The list kept under `key` in `lists`, made (and `key` added to `order`) on first use.
local function listIn(lists, order, key)
  local list = lists[key]
  if not list then
    list = {}
    lists[key] = list
    order[#order + 1] = key
  end
  return list
end

-- Where the ids of `wanted` (a set: id -> true, `count` of them) first stand in the list `key`:
-- id -> 0-based index. The list is read in windows of 1,000 and no further than the last of
-- them; each entry is looked up in `wanted` (a table of the ids, not of the whole list). Asking
-- for each id alone (LPOS, LREM) would read the list as far as it, once per id.
local function positionsInList(key, wanted, count)
  local at = {}
  local len = rcall('LLEN', key)
  local s = 0
  while s < len and count > 0 do
    for k, id in ipairs(rcall('LRANGE', key, s, s + 999)) do
      if wanted[id] and not at[id] then
        at[id] = s + k - 1
        count = count - 1
      end
    end
    s = s + 1000
  end
  return at
end

local function queueInfo(P)
  local q = Q[P]
  if q == nil then
    q = {P = P}
    Q[P] = q
  end
  return q
end

-- Approximate cap of the events stream; written with BullMQ's default when absent. As text:
-- Redis prints a Lua number given to a command with %.17g, which costs more than the command.
local function maxEvents(P)
  local q = queueInfo(P)
  if q.maxEvents == nil then
    local v = rcall('HGET', P .. 'meta', 'opts.maxLenEvents')
    if not v then
      v = '10000'
      rcall('HSET', P .. 'meta', 'opts.maxLenEvents', v)
    end
    local n = tonumber(v)
    q.maxEvents = n and string.format('%d', n) or v
  end
  return q.maxEvents
end

-- "Paused" = meta has field paused; "maxed" = a global concurrency is set and reached.
-- Not cached: a call may move jobs in or out of active.
local function isPausedOrMaxed(P)
  local m = rcall('HMGET', P .. 'meta', 'paused', 'concurrency')
  if m[1] then return true end
  if m[2] then
    return rcall('LLEN', P .. 'active') >= tonumber(m[2])
  end
  return false
end

local function addBaseMarkerIfNeeded(P)
  if not isPausedOrMaxed(P) then
    rcall('ZADD', P .. 'marker', '0', '0')
  end
end

-- The delay marker carries the due time of the earliest delayed job (possibly fractional ms).
local function addDelayMarkerIfNeeded(P)
  local first = rcall('ZRANGE', P .. 'delayed', 0, 0, 'WITHSCORES')
  if first[2] then
    rcall('ZADD', P .. 'marker', tonumber(first[2]) / 4096, '1')
  end
end

-- Score of a delayed job: due * 4096 + k, k keeping FIFO order among jobs due the same ms.
local function delayedScore(P, due)
  local base = due * 4096
  local last = rcall('ZREVRANGEBYSCORE', P .. 'delayed', base + 4095, base, 'WITHSCORES', 'LIMIT', 0, 1)
  if last[2] then
    local k = tonumber(last[2]) + 1 - base
    if k > 4095 then k = 4095 end
    return base + k
  end
  return base
end

local function addPrioritized(P, id, priority)
  local c = rcall('INCR', P .. 'pc')
  rcall('ZADD', P .. 'prioritized', priority * 4294967296 + (c % 4294967296), id)
end

local function emit(P, ...)
  return rcall('XADD', P .. 'events', 'MAXLEN', '~', maxEvents(P), '*', 'event', ...)
end

-- v6 pause: jobs stay where they are; workers see the flag and no marker.
local function pauseQueue(P)
  rcall('HSET', P .. 'meta', 'paused', 1)
  rcall('DEL', P .. 'marker')
  emit(P, 'paused')
end

-- A finished job sent back to run (retry): forget its outcome, and a child whose result or
-- failure its parent recorded is pending in that parent again (BullMQ 6.7; a parent that already
-- left waiting-children is not moved back).
local function reopenFinishedJob(jobKey, state)
  local parentKey = rcall('HGET', jobKey, 'parentKey')
  if parentKey and rcall('EXISTS', parentKey) == 1 then
    local recorded = rcall('HDEL', parentKey .. ':processed', jobKey)
      + rcall('HDEL', parentKey .. ':failed', jobKey)
      + rcall('ZREM', parentKey .. ':unsuccessful', jobKey)
    if recorded > 0 then rcall('SADD', parentKey .. ':dependencies', jobKey) end
  end
  rcall('HDEL', jobKey, 'finishedOn', 'processedOn', state == 'completed' and 'returnvalue' or 'failedReason')
end

-- The events stream's key of a queue, made once per call: the worker's script emits two
-- events a job, and a concatenation costs several table lookups.
local eventsKeys = {}

local function emitUncapped(P, ...)
  local key = eventsKeys[P]
  if not key then
    key = P .. 'events'
    eventsKeys[P] = key
  end
  return rcall('XADD', key, '*', 'event', ...)
end
