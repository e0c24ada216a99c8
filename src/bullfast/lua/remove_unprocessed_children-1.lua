--[[
  remove_unprocessed_children: remove the parent's pending children, and recursively their
  pending children, as BullMQ 6.7 does: one a worker holds (by its own lock) and one that
  failed stay, and so does every child that finished (processed, ignored, failed).
  KEYS[1] the parent's job key
  Returns the number of the parent's children removed.
]]
--@include queue
--@include parent
--@include remove

return removeChildrenOf(KEYS[1], 'pending')
