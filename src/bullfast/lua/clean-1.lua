--[[
  clean: remove up to ARGV[4] jobs (0 = no limit) of one state that are older than ARGV[3]
  (a timestamp), with no per-job events; one 'cleaned' event with the count (0 included).
  The candidates are BullMQ's: of a list the `max` oldest ids (its tail), of delayed and
  prioritized the `max` first by score, of completed and failed the `max` first finished
  before the timestamp; only candidates old enough (and, in active, unlocked) go.
  KEYS[1] the queue's meta key
  ARGV[1] P, [2] state (completed | failed | wait | paused | active | delayed | prioritized),
      [3] timestamp: jobs at or before it go, [4] max jobs
  Completed and failed jobs are judged by their finish time; waiting ones by finishedOn,
  processedOn or timestamp (the first present); active ones only if no worker holds them.
  Returns the removed ids.
]]
--@include queue
--@include parent
--@include remove

local P, state, limitTs, max = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local key = P .. state
local removed = {}
local isList = state == 'wait' or state == 'paused' or state == 'active'

local function oldEnough(id)
  local f = rcall('HMGET', P .. id, 'finishedOn', 'processedOn', 'timestamp', 'rjk')
  if f[4] then return false end  -- a job scheduler's iteration
  local t = tonumber(f[1]) or tonumber(f[2]) or tonumber(f[3])
  if state == 'delayed' then t = tonumber(f[2]) or tonumber(f[3]) end
  if state == 'prioritized' then t = tonumber(f[3]) end
  return t == nil or t <= limitTs
end

local function firstByScore(upTo)
  if max > 0 then return rcall('ZRANGEBYSCORE', key, 0, upTo, 'LIMIT', 0, max) end
  return rcall('ZRANGEBYSCORE', key, 0, upTo)
end

if state == 'completed' or state == 'failed' then
  local ids = firstByScore(limitTs)
  for _, id in ipairs(ids) do
    hardRemoveJob(P, id)
    rcall('ZREM', key, id)
    removed[#removed + 1] = id
  end
else
  local ids
  if isList then
    ids = rcall('LRANGE', key, max > 0 and -max or 0, -1)
  else
    ids = firstByScore('+inf')
  end
  -- a list's removed entries are overwritten with a marker (counted from the tail, which is
  -- where the candidates were read), then all taken out by one LREM: an LREM per job would
  -- read the whole list each time
  local marker = 'bullfast:cleaned'
  for i, id in ipairs(ids) do
    if max > 0 and #removed >= max then break end
    local locked = state == 'active' and rcall('EXISTS', P .. id .. ':lock') == 1
    if not locked and oldEnough(id) then
      hardRemoveJob(P, id, isList)
      if isList then rcall('LSET', key, i - 1 - #ids, marker) end
      removed[#removed + 1] = id
    end
  end
  if isList and #removed > 0 then rcall('LREM', key, 0, marker) end
end
emit(P, 'cleaned', 'count', #removed)
return removed
