--[[
  fan_out_end: end a streamed fan-out (its parent waits for the placeholder dependency
  '<parent>:unsealed' while children are being added).
  KEYS[1] the parent's job key
  ARGV[1] 'seal' | 'fail', ARGV[2] now, ARGV[3] failure reason (for 'fail')
  seal: the placeholder goes; the parent runs at once if every child is already done.
  fail: the placeholder goes and the parent gets a deferred failure and leaves
        waiting-children, so the next worker fails it (its own parent's policy then applies).
        Its pending children are the caller's to remove next, in bounded steps
        (remove_children, sweep_children): here that would be one call of unbounded length.
  Returns {0, added} or {-1} missing parent, {-21, state} the fan-out is not open.
]]
--@include queue
--@include parent

local parentKey = KEYS[1]
local f = rcall('HMGET', parentKey, 'fanout', 'fanoutAdded')
if rcall('EXISTS', parentKey) == 0 then return {-1} end
if f[1] ~= 'open' then return {-21, f[1] or 'none'} end
local now = tonumber(ARGV[2])
rcall('SREM', parentKey .. ':dependencies', parentKey .. ':unsealed')
if ARGV[1] == 'seal' then
  rcall('HSET', parentKey, 'fanout', 'sealed')
  releaseParentIfReady(parentKey, now)
else
  rcall('HSET', parentKey, 'fanout', 'aborted', 'defa', ARGV[3])
  local pP, pid = splitJobKey(parentKey)
  if rcall('ZREM', pP .. 'waiting-children', pid) == 1 then releaseParent(parentKey, now) end
end
return {0, tonumber(f[2]) or 0}
