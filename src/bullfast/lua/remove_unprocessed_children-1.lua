--[[
  remove_unprocessed_children: remove, recursively, every pending child that no worker holds.
  KEYS[1] the parent's job key
  Returns the number of children removed.
]]
--@include queue
--@include parent
--@include remove

local removed = 0
for _, childKey in ipairs(rcall('SMEMBERS', KEYS[1] .. ':dependencies')) do
  if rcall('EXISTS', childKey) == 1 and not isLocked(childKey, true) then
    local cP, cid = splitJobKey(childKey)
    removeJob(cP, cid, true)
    removed = removed + 1
  end
end
return removed
