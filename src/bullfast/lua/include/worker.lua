--[[
  Helpers of the worker's scripts ("--@include worker", after "queue", "parent", "remove").
]]

-- Due delayed jobs (at most 1000) go to wait or prioritized.
local function promoteDelayedJobs(P, now)
  local due = rcall('ZRANGEBYSCORE', P .. 'delayed', '0', string.format('%d', (now + 1) * 4096 - 1), 'LIMIT', '0', '1000')
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
-- (stalledSetExists = false skips the SREM, for callers that know the set is absent)
local function takeLock(P, id, jobKey, token, stalledSetExists)
  if token == '0' then return 0 end
  local lockKey = jobKey .. ':lock'
  local lock = rcall('GET', lockKey)
  if not lock then return -2 end
  if lock ~= token then return -6 end
  rcall('DEL', lockKey)
  if stalledSetExists ~= false then rcall('SREM', P .. 'stalled', id) end
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

-- removeOnComplete / removeOnFail: "count|age|limit" (count -1 keeps all, 0 keeps none), as
-- BullMQ trims, the job just finished included: by age, the newest `limit` of the jobs that
-- finished at least `age` seconds ago (so {age: 0} removes it too); then by count, every job
-- beyond the newest `count` (ties in the score in the set's reverse member order).
local function applyRetention(P, set, keep, now)
  local count, age, limit = string.match(keep, '^([^|]*)|([^|]*)|([^|]*)$')
  count = tonumber(count) or -1
  age = tonumber(age)
  limit = tonumber(limit) or 1000
  local setKey = P .. set
  if age then
    local old = rcall('ZREVRANGEBYSCORE', setKey, now - age * 1000, '-inf', 'LIMIT', 0, limit)
    for _, oldId in ipairs(old) do dropFinishedJob(P, oldId) end
    for i = 1, #old, 1000 do
      rcall('ZREM', setKey, unpack(old, i, math.min(i + 999, #old)))
    end
  end
  if count > 0 then
    local beyond = rcall('ZREVRANGE', setKey, count, -1)
    if #beyond > 0 then
      for _, oldId in ipairs(beyond) do dropFinishedJob(P, oldId) end
      rcall('ZREMRANGEBYRANK', setKey, 0, -(count + 1))
    end
  end
end

-- Take up to n jobs for a worker (protocol 7.2, n times): due delayed jobs are promoted, pause,
-- global concurrency and rate limits are honoured, each job gets a lock holding `token` (one
-- token serves the jobs of one call: a lock is checked per job, so a token only has to differ
-- between the attempts of one job, and the worker takes a job at most once per call), an
-- 'active' event, processedOn / pb / ats. Appends to `out`: id, the job's hash as read before those
-- three were written (HGETALL), ... (the callers reply with `out` packed by cmsgpack: Redis
-- converts a script's reply element by element, ~600 instructions a string) and returns
-- taken, rateLimitTtl, nextDelayedDue (the last only when nothing was taken), and the ids it
-- dropped because their key holds no job hash (deleted, or someone else's value).
local function fetchJobs(P, now, token, lockDuration, limitMax, limitDuration, name, n, out)
  local meta = rcall('HMGET', P .. 'meta', 'paused', 'concurrency', 'max', 'duration')
  local concurrency = tonumber(meta[2])
  local maxJobs = tonumber(meta[3]) or limitMax
  local duration = limitDuration or tonumber(meta[4])
  promoteDelayedJobs(P, now)
  local taken, rateTtl = 0, 0
  local dropped = {}
  -- numbers given to redis.call are printed with %.17g, costly per job: format them once
  local nowText = string.format('%d', now)
  local lockPx = lockDuration and string.format('%d', lockDuration)
  local atsTexts = {}
  local batch = {}
  local batchMode = not maxJobs and not concurrency and not meta[1]
  if batchMode then
    -- no per-job limit to check: pop the whole batch at once (same order as n RPOPLPUSH,
    -- then n ZPOPMIN once wait is empty)
    local ids = rcall('RPOP', P .. 'wait', string.format('%d', n)) or {}
    for _, id in ipairs(ids) do
      if string.sub(id, 1, 2) ~= '0:' then batch[#batch + 1] = id end  -- skip v4 markers
    end
    local need = n - #batch
    if need > 0 then
      local popped = rcall('ZPOPMIN', P .. 'prioritized', need)
      for i = 1, #popped, 2 do batch[#batch + 1] = popped[i] end
      if #popped / 2 < need then rcall('DEL', P .. 'pc') end
    end
    for i = 1, #batch, 5000 do
      rcall('LPUSH', P .. 'active', unpack(batch, i, math.min(i + 4999, #batch)))
    end
  end
  local id = nil
  -- one job at a time, checking the limits before each (BullMQ's move to active)
  local function nextChecked()
    if maxJobs then
      local used = tonumber(rcall('GET', P .. 'limiter'))
      if used and used >= maxJobs then
        local ttl = rcall('PTTL', P .. 'limiter')
        if ttl == 0 then rcall('DEL', P .. 'limiter') end
        if ttl > 0 then
          rateTtl = ttl
          return nil
        end
      end
    end
    if meta[1] or (concurrency and rcall('LLEN', P .. 'active') >= concurrency) then return nil end
    local next = rcall('RPOPLPUSH', P .. 'wait', P .. 'active')
    while next and string.sub(next, 1, 2) == '0:' do  -- a v4 marker left in wait
      rcall('LREM', P .. 'active', 1, next)
      next = rcall('RPOPLPUSH', P .. 'wait', P .. 'active')
    end
    if not next then
      next = rcall('ZPOPMIN', P .. 'prioritized')[1]
      if next then
        rcall('LPUSH', P .. 'active', next)
      else
        rcall('DEL', P .. 'pc')
      end
    end
    return next
  end

  while taken < n do
    if batchMode then
      id = batch[taken + 1]
    else
      id = nextChecked()
    end
    if not id then break end

    local jobKey = P .. id
    local hash = redis.pcall('HGETALL', jobKey)
    if hash.err then hash = {} end  -- not a hash at all (written by someone else)
    if #hash == 0 then
      -- an id whose job hash is gone (deleted by hand) or is not a hash: nothing to run; drop it
      -- rather than re-create a hash holding only processedOn
      rcall('LREM', P .. 'active', 1, id)
      dropped[#dropped + 1] = id
      if batchMode then
        table.remove(batch, taken + 1)
      end
    else
    local ats, defa = 0, false
    for i = 1, #hash, 2 do
      local field = hash[i]
      if field == 'ats' then
        ats = tonumber(hash[i + 1]) or 0
      elseif field == 'defa' then
        defa = true
      end
    end
    -- jobs bound to fail at once (deferred failure) do not count against the rate limit
    if maxJobs and not defa then
      if rcall('INCR', P .. 'limiter') == 1 then
        rcall('PEXPIRE', P .. 'limiter', math.floor(math.abs(duration or 0)))
      end
    end
    if token ~= '0' then
      rcall('SET', jobKey .. ':lock', token, 'PX', lockPx)
    end
    emitUncapped(P, 'active', 'jobId', id, 'prev', 'waiting')
    -- one HSET for processedOn, pb and ats (BullMQ: HSET + HINCRBY). The reply holds the hash
    -- as it was read: the worker knows what this wrote (now, ats + 1, its name)
    local atsText = atsTexts[ats]
    if not atsText then
      atsText = string.format('%d', ats + 1)
      atsTexts[ats] = atsText
    end
    if name ~= '' then
      rcall('HSET', jobKey, 'processedOn', nowText, 'ats', atsText, 'pb', name)
    else
      rcall('HSET', jobKey, 'processedOn', nowText, 'ats', atsText)
    end
    taken = taken + 1
    out[#out + 1] = id
    out[#out + 1] = hash
    end
  end
  if taken > 0 then
    rcall('ZADD', P .. 'marker', '0', '0')
    return taken, rateTtl, 0, dropped
  end
  if rateTtl > 0 then return 0, rateTtl, 0, dropped end
  return 0, 0, nextDelayedDue(P), dropped
end
