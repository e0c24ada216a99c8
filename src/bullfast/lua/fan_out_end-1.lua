--[[
  fan_out_end: end a streamed fan-out (its parent waits for the placeholder dependency
  '<parent>:unsealed' while children are being added).
  KEYS[1] the parent's job key
  ARGV[1] 'seal' | 'fail' | 'release', ARGV[2] now, ARGV[3] failure reason (for 'fail')
  seal: the placeholder goes; the parent runs at once if every child is already done. (If a
        child's failure policy already failed the parent or moved it on, the seal still tidies
        the placeholder away, and says so.)
  fail: the fan-out is 'aborting': no more children are accepted, the parent gets its
        deferred failure but keeps waiting for the placeholder, so that nothing releases it
        while the caller removes its pending children in bounded steps (remove_children,
        sweep_children: here that would be one call of unbounded length).
  release: ends an abort: the placeholder goes and the parent leaves waiting-children, so
        the next worker fails it (its own parent's policy then applies).
  Returns {0, added, stopped} (stopped: 1 if the parent had stopped waiting for its children
  before a seal) or {-1} missing parent, {-21, state} the fan-out is not open (for 'release':
  not aborting).
]]
--@include queue
--@include parent

local parentKey = KEYS[1]
local f = rcall('HMGET', parentKey, 'fanout', 'fanoutAdded', 'defa')
if rcall('EXISTS', parentKey) == 0 then return {-1} end
local mode, now = ARGV[1], tonumber(ARGV[2])
if f[1] ~= (mode == 'release' and 'aborting' or 'open') then return {-21, f[1] or 'none'} end
local stopped = 0
if mode == 'seal' then
  if fanOutParentStopped(parentKey, f[3]) then stopped = 1 end
  rcall('SREM', parentKey .. ':dependencies', parentKey .. ':unsealed')
  rcall('HSET', parentKey, 'fanout', 'sealed')
  releaseParentIfReady(parentKey, now)
elseif mode == 'fail' then
  rcall('HSET', parentKey, 'fanout', 'aborting', 'defa', ARGV[3])
else
  rcall('SREM', parentKey .. ':dependencies', parentKey .. ':unsealed')
  rcall('HSET', parentKey, 'fanout', 'aborted')
  local pP, pid = splitJobKey(parentKey)
  if rcall('ZREM', pP .. 'waiting-children', pid) == 1 then releaseParent(parentKey, now) end
end
return {0, tonumber(f[2]) or 0, stopped}
