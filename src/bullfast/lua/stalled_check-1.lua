--[[
  stalled_check: find jobs whose worker stopped renewing their lock (protocol 7.8).
  A job is stalled when it was in the stalled set at the previous check and its lock is gone.
  It goes back to wait (tail: it runs next); past maxStalledCount it gets a deferred failure
  ('defa'), so the next worker fails it without running it.
  KEYS[1] the queue's meta key
  ARGV[1] P, [2] now, [3] maxStalledCount, [4] stalledInterval (ms)
  Returns {ids moved back, ids whose stalled counter was not a number (reset to 1)}; both
  empty when another worker checked within the interval.
]]
--@include queue

local P, now = ARGV[1], ARGV[2]
local maxStalled = tonumber(ARGV[3])
if rcall('EXISTS', P .. 'stalled-check') == 1 then return {{}, {}} end
rcall('SET', P .. 'stalled-check', now, 'PX', ARGV[4])
rcall('XTRIM', P .. 'events', 'MAXLEN', '~', maxEvents(P))

local function ownedByLiveScheduler(jobKey)
  local rjk = rcall('HGET', jobKey, 'rjk')
  if not rjk then return false end
  return rcall('EXISTS', P .. 'repeat:' .. rjk) == 1 or rcall('ZSCORE', P .. 'repeat', rjk) ~= false
end

local moved = {}
local repaired = {}
local stalled = rcall('SMEMBERS', P .. 'stalled')
if #stalled > 0 then
  rcall('DEL', P .. 'stalled')
  for _, id in ipairs(stalled) do
    if string.sub(id, 1, 2) == '0:' then
      rcall('LREM', P .. 'active', -1, id)
    else
      local jobKey = P .. id
      if rcall('EXISTS', jobKey .. ':lock') == 0 and rcall('LREM', P .. 'active', 1, id) > 0 then
        local count = redis.pcall('HINCRBY', jobKey, 'stc', 1)
        if type(count) ~= 'number' then
          -- a stalled counter someone wrote as text: start it again rather than lose the job
          rcall('HSET', jobKey, 'stc', 1)
          count = 1
          repaired[#repaired + 1] = id
        end
        if count > maxStalled and not ownedByLiveScheduler(jobKey) then
          rcall('HSET', jobKey, 'defa', 'job stalled more than allowable limit')
        end
        rcall('RPUSH', P .. 'wait', id)
        addBaseMarkerIfNeeded(P)
        emitUncapped(P, 'waiting', 'jobId', id, 'prev', 'active')
        emitUncapped(P, 'stalled', 'jobId', id)
        moved[#moved + 1] = id
      end
    end
  end
end

local active = rcall('LRANGE', P .. 'active', 0, -1)
for i = 1, #active, 7000 do
  rcall('SADD', P .. 'stalled', unpack(active, i, math.min(i + 6999, #active)))
end
return {moved, repaired}
