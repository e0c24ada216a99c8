--[[
  remove_job: remove a job, and by default its children, recursively (job.remove()).
  KEYS[1] the job key
  ARGV[1] P (queue prefix "<prefix>:<queue>:"), ARGV[2] job id, ARGV[3] '1' to remove children,
  ARGV[4] the most direct children removed in this one call ('' no limit),
  ARGV[5] step of a removal in several calls (a job with more children than that, or more
      descendants than ARGV[6]):
    ''       the whole removal in this call
    'detach' take the job out of its state (so removing its last pending child cannot release
             it), remembering that state in its hash; its children go next (remove_children)
    'finish' remove the detached job itself, its children being gone
  ARGV[6] the most descendants removed in this one call (with ARGV[4]); for 'detach' and
      'finish': '1' to go on even while a worker holds the job (in the sub-tree of a finished
      job, which goes whole, as in BullMQ)
  Returns 1 removed (or nothing to remove; 'detach': detached), 0 the job or a pending
  descendant is locked, 2 too many children or descendants for one call (nothing written), -8 the job is the
  next run of a job scheduler (BullMQ's; removing it would stop the scheduler).
]]
--@include queue
--@include parent
--@include remove

local P, id = ARGV[1], ARGV[2]
local jobKey = P .. id
local withChildren = ARGV[3] == '1'
local limit, step = tonumber(ARGV[4]), ARGV[5]

local heldToo = ARGV[6] == '1'
if step == 'detach' then
  if not heldToo and rcall('EXISTS', jobKey .. ':lock') == 1 then return 0 end
  if rcall('EXISTS', jobKey) == 1 and not rcall('HGET', jobKey, 'bfRemovingFrom') then
    rcall('HSET', jobKey, 'bfRemovingFrom', removeFromAnyState(P, id))
  end
  return 1
elseif step == 'finish' then
  if not heldToo and rcall('EXISTS', jobKey .. ':lock') == 1 then return 0 end
  local prev = rcall('HGET', jobKey, 'bfRemovingFrom')
  if prev then
    removeJobOutOfState(P, id, false, prev)
  else
    removeJob(P, id, false)
  end
  return 1
end

-- as BullMQ: the current run of a job scheduler (its "repeat:<key>:<millis>" job) stays
if step == '' then
  local schedulerKey = rcall('HGET', jobKey, 'rjk')
  if schedulerKey then
    local millis = rcall('ZSCORE', P .. 'repeat', schedulerKey)
    if millis and id == 'repeat:' .. schedulerKey .. ':' .. millis then return -8 end
  end
end

if withChildren and limit then
  local n = rcall('SCARD', jobKey .. ':dependencies') + rcall('HLEN', jobKey .. ':processed')
    + rcall('HLEN', jobKey .. ':failed') + rcall('ZCARD', jobKey .. ':unsuccessful')
  if n > limit or descendantsUpTo(jobKey, true, tonumber(ARGV[6])) > tonumber(ARGV[6]) then return 2 end
end
if isLocked(jobKey, withChildren) then return 0 end
removeJob(P, id, withChildren)
return 1
