--[[
  finish_jobs: end the current attempt of several active jobs of one queue, each exactly as
  BullMQ's single operation would: complete, fail for good, retry now, retry later, or go back
  to wait (rate limited); completion and failure also update the job's parent (protocol 7.4-7.9,
  8.2-8.3). Then, like BullMQ's fetch-next, take up to n new jobs (fetchJobs).
  KEYS[1] the queue's meta key
  ARGV[1] P, [2] now, [3] '1' if the worker fetches next ('drained' is then only emitted when
      nothing is delayed or paused, as with BullMQ's fetch-next), [4..9] the fetch: lock token
      (of every job it takes), lockDuration, limiter max, limiter duration, worker name, n
      (0 = none), [10] the most data points of the metrics kept ('' = none collected), then
      per job:
     id, token ('0' = unlocked), action, value, stacktrace JSON ('' = leave), keep, attempts,
     extra, time (ms: when the attempt ended)
     or, for a completion, only id, token, 'c', value, keep, time (it has no stacktrace,
     attempts or extra: 3 arguments fewer a job, ~1 % of Redis's work at C = 50)
     action 'c' complete: value = returnvalue JSON, keep = removeOnComplete "count|age|limit"
            'f' fail: value = failedReason, keep = removeOnFail
            'r' retry now: extra = '1' for lifo
            'd' retry after extra ms ('D': the same without counting an attempt)
            'w' back to wait (rate limited)
  Returns {code per job..., taken, rateLimitTtl, nextDelayedDue, dropped ids, jobs} (see
  fetchJobs; jobs only when some were taken); a code is 0
  (for 'w': the limiter's ttl), or -1 missing, -2 no lock, -3 not active, -4 pending children,
  -6 lock mismatch, -9 failed children.
]]
--@include queue
--@include parent
--@include remove
--@include worker

local P = ARGV[1]
local fetchNext = ARGV[3] == '1'
local metricsPoints = tonumber(ARGV[10])
local activeKey = P .. 'active'
local wantJobs = tonumber(ARGV[9])
local results = {}
local promoted = false
local finished = false
local lastNow = tonumber(ARGV[2])
local parents = {}  -- parent JSON text -> decoded (siblings share it)

rcall('XTRIM', P .. 'events', 'MAXLEN', '~', maxEvents(P))
local stalledSetExists = rcall('EXISTS', P .. 'stalled') == 1

-- A completed child leaves its parent's dependencies and records its result at once, as
-- BullMQ's completion does. The parent's pending count is read once per call (SCARD, after
-- the first child's removal) and counted down, so the last child releases the parent without
-- a SCARD per child; a path that changes dependencies sets otherwise (failures, removals,
-- retention) forgets the counts, which are then read afresh.
local depsLeft = {}

-- (a parent's two keys made once per call: siblings share them, and on Redis 7 making a Lua
-- string costs in proportion to its length)
local parentKeys = {}

local function completeChild(jobKey, parentKey, value, now)
  local keys = parentKeys[parentKey]
  if not keys then
    keys = {parentKey .. ':dependencies', parentKey .. ':processed'}
    parentKeys[parentKey] = keys
  end
  local dk = keys[1]
  if rcall('SREM', dk, jobKey) == 0 then return end
  rcall('HSET', keys[2], jobKey, value)
  local left = depsLeft[parentKey]
  if left then left = left - 1 else left = rcall('SCARD', dk) end
  depsLeft[parentKey] = left
  if left == 0 then releaseParentIfReady(parentKey, now) end
end

-- Completed jobs enter the completed set in one ZADD per call; flushed before retention
-- reads the set, and at the end.
local completedBatch = {}

local function flushCompleted()
  if #completedBatch > 0 then
    rcall('ZADD', P .. 'completed', unpack(completedBatch))
    completedBatch = {}
  end
end

local function parentFrom(parentKey, parentJson)
  if parentJson then
    local parent = parents[parentJson]
    if parent == nil then
      local ok, decoded = pcall(cjson.decode, parentJson)
      parent = (ok and type(decoded) == 'table' and decoded.id and decoded.queueKey) and decoded or false
      if parent then parent.key = decoded.queueKey .. ':' .. decoded.id end
      parents[parentJson] = parent
    end
    if parent then return parent.key, parent end
  end
  return parentKey, nil
end

-- BullMQ's metrics of finished jobs ("metrics:completed" / "metrics:failed"): a running count,
-- and a list of per-minute counts, newest first, at most metricsPoints long. A minute with no
-- job finished is a 0; the count of a minute is known once a job finishes in a later one.
local function collectMetrics(set, now)
  local key = P .. 'metrics:' .. set
  local before = rcall('HINCRBY', key, 'count', 1) - 1
  local last = rcall('HMGET', key, 'prevTS', 'prevCount')
  if not last[1] then
    rcall('HSET', key, 'prevTS', now, 'prevCount', 0)
    return
  end
  local minutes = math.min(math.floor(now / 60000) - math.floor(tonumber(last[1]) / 60000), metricsPoints)
  if minutes <= 0 then return end
  local points = {before - (tonumber(last[2]) or 0)}
  for i = 2, minutes do points[i] = 0 end
  for i = 1, #points, 5000 do
    rcall('LPUSH', key .. ':data', unpack(points, i, math.min(i + 4999, #points)))
  end
  rcall('LTRIM', key .. ':data', 0, metricsPoints - 1)
  rcall('HSET', key, 'prevCount', before, 'prevTS', now)
end

-- deduplication.keepLastIfActive (a Node producer's): the latest duplicate of a job added while
-- it ran was parked in 'dn:<id>'; as the job finishes, the parked one is added, as BullMQ's
-- move-to-finished does (its id reserved then, the finish time as its timestamp, the
-- deduplication id pointed at it, its events before the finished job's own).
local function addParkedDuplicate(deid, now)
  local parkedKey = P .. 'dn:' .. deid
  local parked = rcall('HMGET', parkedKey, 'name', 'data', 'opts', 'pk', 'pd', 'pdk', 'rjk', 'jid')
  if not parked[1] and not parked[3] then return end
  local counted = tostring(rcall('INCR', P .. 'id'))
  local id = parked[8] or counted
  local jobKey = P .. id
  local ok, opts = pcall(cjson.decode, parked[3] or '{}')
  if not ok or type(opts) ~= 'table' then opts = {} end
  rcall('SET', P .. 'de:' .. deid, id)
  local delay = tonumber(opts['delay']) or 0
  local priority = tonumber(opts['priority']) or 0
  local fields = {'name', parked[1] or '', 'data', parked[2] or '{}', 'opts', parked[3] or '{}',
    'timestamp', now, 'delay', delay, 'priority', priority}
  if parked[4] then
    fields[#fields + 1] = 'parentKey'; fields[#fields + 1] = parked[4]
    fields[#fields + 1] = 'parent'; fields[#fields + 1] = parked[5]
  end
  if parked[7] then fields[#fields + 1] = 'rjk'; fields[#fields + 1] = parked[7] end
  local de = opts['de']
  if type(de) == 'table' and de['id'] then fields[#fields + 1] = 'deid'; fields[#fields + 1] = de['id'] end
  rcall('HSET', jobKey, unpack(fields))
  emitUncapped(P, 'added', 'jobId', id, 'name', parked[1] or '')
  if delay ~= 0 then
    local due = now + math.max(delay, 0)
    rcall('ZADD', P .. 'delayed', delayedScore(P, due), id)
    emit(P, 'delayed', 'jobId', id, 'delay', due)
    addDelayMarkerIfNeeded(P)
  else
    if priority > 0 then
      addPrioritized(P, id, priority)
    else
      rcall(opts['lifo'] and 'RPUSH' or 'LPUSH', P .. 'wait', id)
    end
    addBaseMarkerIfNeeded(P)
    emit(P, 'waiting', 'jobId', id)
  end
  if parked[6] then rcall('SADD', parked[6], jobKey) end
  rcall('DEL', parkedKey)
end

-- Attempt counts as text, printed once per call (Redis prints a number given to a command
-- with %.17g, and string.format costs as much)
local countTexts = {}
local function countText(n)
  local text = countTexts[n]
  if not text then
    text = string.format('%d', n)
    countTexts[n] = text
  end
  return text
end

local function finish(id, token, action, value, stacktrace, keep, attempts, extra, now, nowText)
  local jobKey = P .. id
  -- a completion updates the parent that parentKey names, as BullMQ's does (none without a
  -- parentKey): the parent's JSON, its failure policy, is read for a failure only
  local f
  if action == 'c' then
    f = redis.pcall('HMGET', jobKey, 'name', 'parentKey', 'deid', 'atm', 'priority')
  else
    f = redis.pcall('HMGET', jobKey, 'name', 'parentKey', 'deid', 'atm', 'priority', 'parent')
  end
  if f.err then return -1 end  -- not a job hash: nothing of this job can be written
  if not f[1] and rcall('EXISTS', jobKey) == 0 then return -1 end
  if action == 'c' and rcall('EXISTS', jobKey .. ':dependencies', jobKey .. ':unsuccessful') > 0 then
    if rcall('SCARD', jobKey .. ':dependencies') ~= 0 then return -4 end
    if rcall('ZCARD', jobKey .. ':unsuccessful') ~= 0 then return -9 end
  end
  if action == 'r' and not promoted then
    promoteDelayedJobs(P, now)
    promoted = true
  end
  local locked = takeLock(P, id, jobKey, token, stalledSetExists)
  if locked < 0 then return locked end
  local priority = tonumber(f[5]) or 0

  if action == 'w' then
    if rcall('LREM', P .. 'active', 1, id) > 0 then
      if priority == 0 then
        rcall('RPUSH', P .. 'wait', id)
        addBaseMarkerIfNeeded(P)
      else
        rcall('ZADD', P .. 'prioritized', priority * 4294967296, id)
      end
      emit(P, 'waiting', 'jobId', id, 'prev', 'active')
    end
    local ttl = rcall('PTTL', P .. 'limiter')
    if ttl > 0 then return ttl end
    return 0
  end

  if action ~= 'c' and action ~= 'D' then
    if stacktrace ~= '' then
      rcall('HSET', jobKey, 'failedReason', value, 'stacktrace', stacktrace)
    else
      rcall('HSET', jobKey, 'failedReason', value)
    end
  end
  if rcall('LREM', activeKey, '-1', id) == 0 then return -3 end
  local atm = (tonumber(f[4]) or 0) + 1

  if action == 'r' then
    if priority == 0 then
      rcall(extra == '1' and 'RPUSH' or 'LPUSH', P .. 'wait', id)
    else
      addPrioritized(P, id, priority)
    end
    addBaseMarkerIfNeeded(P)
    rcall('HSET', jobKey, 'atm', atm)
    emitUncapped(P, 'waiting', 'jobId', id, 'prev', 'active')
    return 0
  end
  if action == 'd' or action == 'D' then
    local delay = tonumber(extra)
    local due = now + delay
    if action == 'd' then
      rcall('HSET', jobKey, 'delay', delay, 'atm', atm)
    else
      rcall('HSET', jobKey, 'delay', delay)
    end
    rcall('ZADD', P .. 'delayed', delayedScore(P, due), id)
    emit(P, 'delayed', 'jobId', id, 'delay', due)
    addDelayMarkerIfNeeded(P)
    return 0
  end

  -- completed or failed for good
  if f[3] then
    local deKey = P .. 'de:' .. f[3]
    local ttl = rcall('PTTL', deKey)
    if ttl == 0 or (ttl == -1 and rcall('GET', deKey) == id) then rcall('DEL', deKey) end
    addParkedDuplicate(f[3], now)
  end
  local parentKey, parent = parentFrom(f[2], f[6])
  if parentKey then
    if action == 'c' then
      completeChild(jobKey, parentKey, value, now)
    else
      depsLeft = {}
      childFailed(jobKey, parentKey, parent, value, now)
    end
  end

  local set = action == 'c' and 'completed' or 'failed'
  local field = action == 'c' and 'returnvalue' or 'failedReason'
  if string.sub(keep, 1, 2) == '0|' then
    deleteJobKeys(jobKey)
    if parentKey and rcall('SREM', parentKey .. ':dependencies', jobKey) == 1 then
      depsLeft = {}
      softReleaseParentIfReady(parentKey)
    end
  else
    if action == 'c' then
      completedBatch[#completedBatch + 1] = nowText
      completedBatch[#completedBatch + 1] = id
      if #completedBatch >= 2000 then flushCompleted() end
    else
      rcall('ZADD', P .. 'failed', now, id)
    end
    rcall('HSET', jobKey, field, value, 'finishedOn', nowText, 'atm', countText(atm))
    if action == 'f' then rcall('HDEL', jobKey, 'defa') end
    if keep ~= '-1||' then
      depsLeft = {}  -- trimming may unlink failed children from their parents
      flushCompleted()
      applyRetention(P, set, keep, now)
    end
  end

  emitUncapped(P, set, 'jobId', id, field, value, 'prev', 'active')
  if action == 'f' and atm >= (tonumber(attempts) or 0) then
    emitUncapped(P, 'retries-exhausted', 'jobId', id, 'attemptsMade', atm)
  end
  if metricsPoints then collectMetrics(set, now) end
  finished = true
  return 0
end

local argv = ARGV  -- a global is read by a table lookup each time: 10 a job
local i, nargs = 11, #argv
while i <= nargs do
  local now
  if argv[i + 2] == 'c' then
    now = tonumber(argv[i + 5])
    local code = finish(argv[i], argv[i + 1], 'c', argv[i + 3], '', argv[i + 4], '', '', now, argv[i + 5])
    results[#results + 1] = code
    -- a refused completion (pending or failed children) keeps its slot: the worker fails the
    -- job first, and takes the next one after, as BullMQ's does
    if code == -4 or code == -9 then wantJobs = wantJobs - 1 end
    i = i + 6
  else
    now = tonumber(argv[i + 8])
    results[#results + 1] = finish(argv[i], argv[i + 1], argv[i + 2], argv[i + 3], argv[i + 4],
      argv[i + 5], argv[i + 6], argv[i + 7], now, argv[i + 8])
    i = i + 9
  end
  if now > lastNow then lastNow = now end
end

flushCompleted()

local taken, rateTtl, nextDue, dropped = 0, 0, 0, {}
local out = {}
if wantJobs > 0 then
  taken, rateTtl, nextDue, dropped = fetchJobs(P, lastNow, ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6]),
    tonumber(ARGV[7]), ARGV[8], wantJobs, out)
end
results[#results + 1] = taken
results[#results + 1] = rateTtl
results[#results + 1] = nextDue
results[#results + 1] = dropped
-- the jobs taken as one MessagePack string (see fetchJobs)
if #out > 0 then results[#results + 1] = cmsgpack.pack(out) end

-- 'drained' as BullMQ's last finishing job would see it: nothing taken, nothing waiting, active
-- or prioritized (and, for a worker that fetches next, nothing delayed and the queue not paused)
if finished and taken == 0 and rateTtl == 0 and rcall('LLEN', P .. 'wait') == 0
    and rcall('LLEN', P .. 'active') == 0 and rcall('ZCARD', P .. 'prioritized') == 0 then
  if not fetchNext or (rcall('ZCARD', P .. 'delayed') == 0 and not isPausedOrMaxed(P)) then
    emitUncapped(P, 'drained')
  end
end
return results
