--[[
  remove_unprocessed_children: remove the parent's pending children, and recursively their
  pending children, as BullMQ 6.7 does: one a worker holds (by its own lock) and one that
  failed stay, and so does every child that finished (processed, ignored, failed).
  KEYS[1] the parent's job key
  ARGV[1] the most pending children, ARGV[2] the most pending descendants, removed in this one
      call: with more, nothing is written and the caller removes them in steps (remove_children)
  Returns the number of the parent's children removed, or -1 for too many.
]]
--@include queue
--@include parent
--@include remove

local most = tonumber(ARGV[2])
if rcall('SCARD', KEYS[1] .. ':dependencies') > tonumber(ARGV[1])
    or descendantsUpTo(KEYS[1], 'pending', most) > most then
  return -1
end
return removeChildrenOf(KEYS[1], 'pending')
