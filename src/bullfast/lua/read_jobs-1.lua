--[[
  read_jobs: jobs of one queue as get_flow reads a level of a tree: each job's hash and, when
  asked, up to n of its child keys of each group (processed, pending, failed, ignored: BullMQ's
  getFlow order), in one call for many jobs. Through redis-py, the hash and the four groups of
  every job were five replies a job, each costing the client more than Redis (a level of
  100,000 leaves took 26 s).
  KEYS[1] a key of the queue (for the routing); ARGV[1] P, ARGV[2] n (0: no children),
  ARGV[3..] job ids
  Returns one MessagePack string: [hash, child keys, hash, child keys, ...] in the order of the
  ids; a hash is its flat field/value list ([] for a job that is gone or is not a hash); the
  child keys are a group's SCAN pages until n are found or the group ends, a group's repeats
  dropped.
]]
local rcall = redis.call
local P = ARGV[1]
local n = tonumber(ARGV[2])
-- n as Redis reads it: the argument's own text (a Lua number prints as %.17g: 2^62 would be
-- "4.6116860184273879e+18", which COUNT refuses); as a ZRANGE end, -1 beyond any set's size
local countText = ARGV[2]
local lastIndex = n >= 2^53 and '-1' or string.format('%d', n - 1)
local out = {}

-- up to n members of a group read by SSCAN / HSCAN (COUNT is only a hint: pages until enough;
-- a SCAN may give a member twice)
local function scanned(command, key, got)
  local found, cursor, seen = 0, '0', {}
  repeat
    local page = rcall(command, key, cursor, 'COUNT', countText)
    cursor = page[2] and page[1] or '0'
    local members = page[2] or {}
    local step = command == 'HSCAN' and 2 or 1
    for i = 1, #members, step do
      local member = members[i]
      if found < n and not seen[member] then
        seen[member] = true
        got[#got + 1] = member
        found = found + 1
      end
    end
  until cursor == '0' or found >= n
end

for i = 3, #ARGV do
  local jobKey = P .. ARGV[i]
  local hash = redis.pcall('HGETALL', jobKey)
  if hash.err then hash = {} end
  local children = {}
  if n > 0 and #hash > 0 then
    scanned('HSCAN', jobKey .. ':processed', children)
    scanned('SSCAN', jobKey .. ':dependencies', children)
    for _, member in ipairs(rcall('ZRANGE', jobKey .. ':unsuccessful', 0, lastIndex)) do
      children[#children + 1] = member
    end
    scanned('HSCAN', jobKey .. ':failed', children)
  end
  out[#out + 1] = hash
  out[#out + 1] = children
end
return cmsgpack.pack(out)
