--[[
  get_jobs: the jobs of some states, ids and hashes read together, so an id whose hash is gone
  (removed meanwhile, or a legacy '0:' marker in a list) is left out instead of returned empty.
  A bounded page (start and end >= 0) reads on past such ids, in at most ARGV[5] ranges, to
  keep its size, as BullMQ 6.7's getJobs does.
  KEYS[1] the queue's meta key
  ARGV[1] P, [2] start, [3] end, [4] '1' oldest first, [5] most ranges read per state, [6..] state keys
      (the key's last part: wait, paused, active, or a sorted set's name)
  Returns per state {id, {field, value, ...}, id, {...}, ..., n}, n the number of ids read
  (where a caller reading a state window by window sees whether it reached the end)
]]
local rcall = redis.call
local P = ARGV[1]
local start, stop = tonumber(ARGV[2]), tonumber(ARGV[3])
local oldestFirst = ARGV[4] == '1'
local maxRanges = tonumber(ARGV[5])

local function isList(name)
  return name == 'wait' or name == 'paused' or name == 'active'
end

-- 1 if the list ends with a legacy '0:' marker (older BullMQ's) at its oldest end, else 0:
-- BullMQ 6.7's getJobs pops it first; this read leaves it, and counts positions without it
local function tailMarker(key, name)
  if name ~= 'wait' and name ~= 'paused' then return 0 end
  local last = rcall('LINDEX', key, -1)
  return (last and string.sub(last, 1, 2) == '0:') and 1 or 0
end

-- ids s..e of a state in the order asked; lists hold the newest at the head
local function idsOf(key, name, list, s, e)
  if list then
    local m = tailMarker(key, name)
    if not oldestFirst then
      -- (indexes from the oldest end step over the marker)
      return rcall('LRANGE', key, s < 0 and s - m or s, e < 0 and e - m or e)
    end
    if s >= 0 and s >= rcall('LLEN', key) - m then return {} end
    -- -e - 1, not -(e + 1): Lua's -0 prints as "-0", which Redis refuses as an index
    local ids = rcall('LRANGE', key, e >= 0 and -e - 1 - m or -e - 1, s >= 0 and -s - 1 - m or -s - 1)
    local n = #ids
    for i = 1, math.floor(n / 2) do
      ids[i], ids[n + 1 - i] = ids[n + 1 - i], ids[i]
    end
    return ids
  end
  return rcall(oldestFirst and 'ZRANGE' or 'ZREVRANGE', key, s, e)
end

local out = {}
for i = 6, #ARGV do
  local key = P .. ARGV[i]
  local list = isList(ARGV[i])
  local found = {}
  local wanted = (start >= 0 and stop >= 0) and stop - start + 1 or nil
  local s, e = start, stop
  local ranges, read = 0, 0
  if wanted and wanted <= 0 then ranges = maxRanges end
  while ranges < maxRanges do
    local ids = idsOf(key, ARGV[i], list, s, e)
    read = read + #ids
    for j = 1, #ids do
      if wanted and #found >= 2 * wanted then break end
      local hash = redis.pcall('HGETALL', P .. ids[j])
      if not hash.err and #hash > 0 then
        found[#found + 1] = ids[j]
        found[#found + 1] = hash
      end
    end
    ranges = ranges + 1
    if not wanted or #ids == 0 or #found >= 2 * wanted then break end
    s = s + #ids
    e = s + wanted - 1
  end
  found[#found + 1] = read
  out[#out + 1] = found
end
return out
