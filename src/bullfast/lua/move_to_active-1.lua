--[[
  move_to_active: take up to n jobs for a worker, each exactly as n single moves to active
  would (promote due delayed jobs, honour pause, global concurrency and rate limits, lock each
  job with its own token, emit 'active', stamp processedOn/pb/ats).
  KEYS[1] the queue's meta key
  ARGV[1] P, [2] now, [3] token base ('0' = no locks; job k gets '<base>:<first + k>'),
      [4] first token number ('' = use the token base as is, for one job), [5] lockDuration, [6] limiter max ('' = none),
      [7] limiter duration, [8] worker name ('' = none), [9] n
  Returns {taken, rateLimitTtl, nextDelayedDue, id1, hash1, id2, hash2, ...}
          (hash = HGETALL as a flat array; nextDelayedDue only when nothing was taken).
]]
--@include queue
--@include parent
--@include remove
--@include worker

local P, now = ARGV[1], tonumber(ARGV[2])
local tokenBase, firstToken, lockDuration = ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local name, n = ARGV[8], tonumber(ARGV[9])
local meta = rcall('HMGET', P .. 'meta', 'paused', 'concurrency', 'max', 'duration')
local concurrency = tonumber(meta[2])
local maxJobs = tonumber(meta[3]) or tonumber(ARGV[6])
local duration = tonumber(ARGV[7]) or tonumber(meta[4])

promoteDelayedJobs(P, now)

local out = {0, 0, 0}
local taken = 0
while taken < n do
  if maxJobs then
    local used = tonumber(rcall('GET', P .. 'limiter'))
    if used and used >= maxJobs then
      local ttl = rcall('PTTL', P .. 'limiter')
      if ttl == 0 then rcall('DEL', P .. 'limiter') end
      if ttl > 0 then
        out[2] = ttl
        break
      end
    end
  end
  if meta[1] or (concurrency and rcall('LLEN', P .. 'active') >= concurrency) then break end

  local id = rcall('RPOPLPUSH', P .. 'wait', P .. 'active')
  while id and string.sub(id, 1, 2) == '0:' do  -- a v4 marker left in wait
    rcall('LREM', P .. 'active', 1, id)
    id = rcall('RPOPLPUSH', P .. 'wait', P .. 'active')
  end
  if not id then
    local popped = rcall('ZPOPMIN', P .. 'prioritized')
    id = popped[1]
    if id then
      rcall('LPUSH', P .. 'active', id)
    else
      rcall('DEL', P .. 'pc')
      break
    end
  end

  local jobKey = P .. id
  -- jobs bound to fail at once (deferred failure) do not count against the rate limit
  if maxJobs and rcall('HEXISTS', jobKey, 'defa') == 0 then
    if rcall('INCR', P .. 'limiter') == 1 then
      rcall('PEXPIRE', P .. 'limiter', math.floor(math.abs(duration or 0)))
    end
  end
  if tokenBase ~= '0' then
    local token = tokenBase
    if firstToken then token = tokenBase .. ':' .. (firstToken + taken) end
    rcall('SET', jobKey .. ':lock', token, 'PX', lockDuration)
  end
  emitUncapped(P, 'active', 'jobId', id, 'prev', 'waiting')
  if name ~= '' then
    rcall('HSET', jobKey, 'processedOn', now, 'pb', name)
  else
    rcall('HSET', jobKey, 'processedOn', now)
  end
  rcall('HINCRBY', jobKey, 'ats', 1)
  taken = taken + 1
  out[#out + 1] = id
  out[#out + 1] = rcall('HGETALL', jobKey)
end

out[1] = taken
if taken > 0 then
  rcall('ZADD', P .. 'marker', 0, '0')
elseif out[2] == 0 then
  out[3] = nextDelayedDue(P)
end
return out
