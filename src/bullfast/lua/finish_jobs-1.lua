--[[
  finish_jobs: end the current attempt of several active jobs of one queue, each exactly as
  BullMQ's single operation would: complete, fail for good, retry now, retry later, or go back
  to wait (rate limited). Completion and failure also update the job's parent (protocol 7.4-7.9,
  8.2-8.3).
  KEYS[1] the queue's meta key
  ARGV[1] P, [2] now, [3] '1' if the worker fetches next (then 'drained' is only emitted when no
          delayed job is pending, as with BullMQ's fetch-next), then 8 arguments per job:
     id, token ('0' = unlocked), action, value, stacktrace JSON ('' = leave), keep, attempts, extra
     action 'c' complete: value = returnvalue JSON, keep = removeOnComplete "count|age|limit"
            'f' fail: value = failedReason, keep = removeOnFail
            'r' retry now: extra = '1' for lifo
            'd' retry after extra ms ('D': the same without counting an attempt)
            'w' back to wait (rate limited)
  Returns one code per job: 0 done (for 'w': the limiter's ttl), or -1 missing, -2 no lock,
  -3 not active, -4 pending children, -6 lock mismatch, -9 failed children.
]]
--@include queue
--@include parent
--@include remove
--@include worker

local P, now = ARGV[1], tonumber(ARGV[2])
local fetchNext = ARGV[3] == '1'
local results = {}
local promoted = false
local finished = false

rcall('XTRIM', P .. 'events', 'MAXLEN', '~', maxEvents(P))

local function finish(id, token, action, value, stacktrace, keep, attempts, extra)
  local jobKey = P .. id
  if rcall('EXISTS', jobKey) == 0 then return -1 end
  if action == 'c' then
    if rcall('SCARD', jobKey .. ':dependencies') ~= 0 then return -4 end
    if rcall('ZCARD', jobKey .. ':unsuccessful') ~= 0 then return -9 end
  end
  if action == 'r' and not promoted then
    promoteDelayedJobs(P, now)
    promoted = true
  end
  local locked = takeLock(P, id, jobKey, token)
  if locked < 0 then return locked end

  if action == 'w' then
    if rcall('LREM', P .. 'active', 1, id) > 0 then
      local priority = tonumber(rcall('HGET', jobKey, 'priority')) or 0
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

  if action ~= 'c' then
    if stacktrace ~= '' then
      rcall('HSET', jobKey, 'failedReason', value, 'stacktrace', stacktrace)
    else
      rcall('HSET', jobKey, 'failedReason', value)
    end
  end
  if rcall('LREM', P .. 'active', -1, id) == 0 then return -3 end

  if action == 'r' then
    local priority = tonumber(rcall('HGET', jobKey, 'priority')) or 0
    if priority == 0 then
      rcall(extra == '1' and 'RPUSH' or 'LPUSH', P .. 'wait', id)
    else
      addPrioritized(P, id, priority)
    end
    addBaseMarkerIfNeeded(P)
    rcall('HINCRBY', jobKey, 'atm', 1)
    emitUncapped(P, 'waiting', 'jobId', id, 'prev', 'active')
    return 0
  end
  if action == 'd' or action == 'D' then
    local delay = tonumber(extra)
    local due = now + delay
    if action == 'd' then rcall('HINCRBY', jobKey, 'atm', 1) end
    rcall('HSET', jobKey, 'delay', delay)
    rcall('ZADD', P .. 'delayed', delayedScore(P, due), id)
    emit(P, 'delayed', 'jobId', id, 'delay', due)
    addDelayMarkerIfNeeded(P)
    return 0
  end

  -- completed or failed for good
  local deid = rcall('HGET', jobKey, 'deid')
  if deid then
    local deKey = P .. 'de:' .. deid
    if rcall('PTTL', deKey) == -1 and rcall('GET', deKey) == id then rcall('DEL', deKey) end
  end
  local parentKey, parent = parentOf(jobKey)
  if parentKey then
    if action == 'c' then
      childCompleted(jobKey, parentKey, value, now)
    else
      childFailed(jobKey, parentKey, parent, value, now)
    end
  end
  local atm = rcall('HINCRBY', jobKey, 'atm', 1)

  local set = action == 'c' and 'completed' or 'failed'
  local field = action == 'c' and 'returnvalue' or 'failedReason'
  if string.sub(keep, 1, 2) == '0|' then
    deleteJobKeys(jobKey)
    if parentKey and rcall('SREM', parentKey .. ':dependencies', jobKey) == 1 then
      softReleaseParentIfReady(parentKey)
    end
  else
    rcall('ZADD', P .. set, now, id)
    rcall('HSET', jobKey, field, value, 'finishedOn', now)
    if action == 'f' then rcall('HDEL', jobKey, 'defa') end
    applyRetention(P, set, id, keep, now)
  end

  emitUncapped(P, set, 'jobId', id, field, value, 'prev', 'active')
  if action == 'f' and atm >= (tonumber(attempts) or 0) then
    emitUncapped(P, 'retries-exhausted', 'jobId', id, 'attemptsMade', atm)
  end
  finished = true
  return 0
end

for i = 4, #ARGV, 8 do
  results[#results + 1] = finish(ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4],
    ARGV[i + 5], ARGV[i + 6], ARGV[i + 7])
end

-- 'drained' as BullMQ's last finishing job would see it: nothing waiting, active or prioritized
-- (and, for a worker that fetches next, nothing delayed and the queue not paused)
if finished and rcall('LLEN', P .. 'wait') == 0 and rcall('LLEN', P .. 'active') == 0
    and rcall('ZCARD', P .. 'prioritized') == 0 then
  if not fetchNext or (rcall('ZCARD', P .. 'delayed') == 0 and not isPausedOrMaxed(P)) then
    emitUncapped(P, 'drained')
  end
end
return results
