--[[
  remove_child_dependency: detach a child from its parent; the parent no longer waits for it
  (and runs now if it was the last one).
  KEYS[1] the child's job key
  Returns 1 detached, 0 it was not pending in its parent, -1 child missing, -5 parent missing.
]]
--@include queue
--@include parent

local jobKey = KEYS[1]
if rcall('EXISTS', jobKey) == 0 then return -1 end
local parentKey = rcall('HGET', jobKey, 'parentKey')
if not parentKey or rcall('EXISTS', parentKey) == 0 then return -5 end
if rcall('SREM', parentKey .. ':dependencies', jobKey) == 0 then return 0 end
softReleaseParentIfReady(parentKey)
rcall('HDEL', jobKey, 'parentKey', 'parent')
return 1
