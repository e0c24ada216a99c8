--[[
  add_jobs: add a batch of jobs, each exactly as BullMQ's add would (standard, lifo, prioritized,
  delayed, or a flow parent into waiting-children), including the registration of children in
  their parents' dependencies.

  One operation (a flow, an add_bulk) may span several calls inside one MULTI/EXEC; the calls
  share a guard key so that a refusal by the first call (a missing parent, an existing id) makes
  the later calls write nothing: MULTI does not roll back.

  KEYS[1] any key of the first queue (routes the call in Redis Cluster)
  ARGV    header, then one record of 10 arguments per job (the layout is built by
          bullfast._core.encode_add_call):
    [1] guard key, or ''
    [2] flags: 'R' return the ids, 'D' defer parent release to the 'L' entries (flows re-using
        existing jobs), 'G' delete the guard at the end (the last call of the operation)
    [3] now: the default job timestamp (ms)
    [4] number of directives, then 3 strings each (kind, a, b), checked before anything is written:
          'E' a must exist (a parent)                     refusal -5 a
          'N' job a must not exist                        refusal -20 a
          'P' existing job a must not have another live parent than b   refusal -7 b (a)
          'F' b = '<expected>+<n>': the open fan-out of parent a has written <expected> items
              so far (a streamed add continues where the last one stopped): refusal -21 a if
              the fan-out is not open or its parent stopped waiting, -22 a if another call
              moved it on
          'T' key a, if it exists, is of type b (a key the call writes): refusal -23 a
          'C' job a is new, or already a child of parent b (a fan-out item sent again on
              resume): then its record, and those of its descendants, are skipped; a job a
              that exists otherwise is refusal -20 a
        and kinds applied once every check passed, before the records:
          'M' HSET on the hash a the fields of the JSON object b (a queue's meta, written by
              the first add of a Queue, so that a refused add leaves none behind)
        and kinds applied after all records:
          'L' release parent a if nothing is pending (see 'D')
          'F' (as above) add <n> to the fan-out's count, less its items skipped by 'C'
              (the count is of children written: 'F' must come before their 'C')
          'O' open a fan-out on parent a (just added): it waits for the placeholder
              dependency '<a>:unsealed' until sealed
    then the number of queue prefixes and the prefixes ("<prefix>:<queue>:"),
    then the number of shared strings and the strings (opts JSON, parent keys, parent JSON,
    deduplication JSON), then the records:
      queue index, id ('' = next counter value), name, data JSON, opts string index,
      timestamp ('' = now), delay, priority, kind, parent string index (0 = none; the parent
      JSON follows the key)
    kind: 's' wait (head), 'l' wait (tail, lifo), 'p' prioritized, 'd' delayed,
          'w' waiting-children; a suffix ':<n>' names the deduplication JSON string.
  Returns {0, results...}: with 'R' one result per record (the job id, or -5 / -7); a fan-out
          chunk ('F') returns {0, number of 'C' jobs skipped as already present};
          {1} when the guard says an earlier call refused; {code, detail, subject} on refusal,
          subject (when it is not the detail) the job key the refusal is about, so the caller
          can say which node of its input failed.
]]
--@include queue
--@include parent

local guard = ARGV[1]
local flags = ARGV[2]
local now = tonumber(ARGV[3])
local returnIds = string.find(flags, 'R', 1, true) ~= nil
local deferRelease = string.find(flags, 'D', 1, true) ~= nil
local dropGuard = string.find(flags, 'G', 1, true) ~= nil

if guard ~= '' and rcall('EXISTS', guard) == 1 then
  if dropGuard then rcall('DEL', guard) end
  return {1}
end

local function refuse(code, detail, subject)
  if guard ~= '' and not dropGuard then
    rcall('SET', guard, '1', 'PX', 60000)
  end
  return {code, detail, subject}
end

local pos = 4
local nDirectives = tonumber(ARGV[pos])
local releases = {}
local metas = {}
local fanOut, fanOutItems, opened
local present, nPresent = {}, 0  -- job keys skipped as already present ('C')
for i = 1, nDirectives do
  local kind, a, b = ARGV[pos + 3 * i - 2], ARGV[pos + 3 * i - 1], ARGV[pos + 3 * i]
  if kind == 'E' then
    if rcall('EXISTS', a) == 0 then return refuse(-5, a) end
  elseif kind == 'N' then
    if rcall('EXISTS', a) == 1 then return refuse(-20, a) end
  elseif kind == 'P' then
    local old = rcall('HGET', a, 'parentKey')
    if old and old ~= b and rcall('EXISTS', old) == 1 then return refuse(-7, b, a) end
  elseif kind == 'F' then
    local f = rcall('HMGET', a, 'fanout', 'fanoutAdded', 'defa')
    if f[1] ~= 'open' or fanOutParentStopped(a, f[3]) then
      return refuse(-21, a)
    end
    local expected, n = string.match(b, '^(%d+)%+(%d+)$')
    if f[2] ~= expected then return refuse(-22, a) end
    fanOut, fanOutItems = a, tonumber(n)
  elseif kind == 'T' then
    local t = rcall('TYPE', a)['ok']
    if t ~= 'none' and t ~= b then return refuse(-23, a) end
  elseif kind == 'C' then
    -- a child of b already: pending, finished, or failed and dropped from the dependencies
    -- (removeDependencyOnFailure: then only its own parentKey says so)
    if rcall('SISMEMBER', b .. ':dependencies', a) == 1 or rcall('HEXISTS', b .. ':processed', a) == 1
        or rcall('HEXISTS', b .. ':failed', a) == 1 or rcall('ZSCORE', b .. ':unsuccessful', a)
        or rcall('HGET', a, 'parentKey') == b then
      present[a] = true
      if b == fanOut then nPresent = nPresent + 1 end
    elseif rcall('EXISTS', a) == 1 then
      return refuse(-20, a)
    end
  elseif kind == 'O' then
    opened = a
  elseif kind == 'L' then
    releases[#releases + 1] = a
  elseif kind == 'M' then
    metas[#metas + 1] = {a, b}
  end
end
pos = pos + 3 * nDirectives + 1

for _, m in ipairs(metas) do
  for field, value in pairs(cjson.decode(m[2])) do
    rcall('HSET', m[1], field, value)
  end
end

local prefixes = {}
local nPrefixes = tonumber(ARGV[pos])
for i = 1, nPrefixes do prefixes[i] = ARGV[pos + i] end
pos = pos + nPrefixes + 1

local S = {}
local nStrings = tonumber(ARGV[pos])
for i = 1, nStrings do S[i] = ARGV[pos + i] end
pos = pos + nStrings + 1

local known = {}      -- job key -> true once known to exist (parents added by this call)
local deps = {}       -- parent dependencies key -> child keys to SADD
local depsOrder = {}

-- SADDs are batched per parent; flush one parent's batch before reading its dependencies.
local function flushDeps(dk)
  local d = deps[dk]
  if d and #d > 0 then
    for i = 1, #d, 5000 do
      rcall('SADD', dk, unpack(d, i, math.min(i + 4999, #d)))
    end
    deps[dk] = {}
  end
end

local function flushPending(q)
  if q.pendingIds and q.pendingIds > 0 then
    rcall('INCRBY', q.P .. 'id', q.pendingIds)
    q.pendingIds = 0
  end
end

local function removeJobKeys(jobKey)
  rcall('DEL', jobKey, jobKey .. ':logs', jobKey .. ':dependencies', jobKey .. ':processed',
    jobKey .. ':failed', jobKey .. ':unsuccessful')
end

-- An add with an existing id keeps the job; it may only (re)attach it to a parent (BullMQ 6.7).
local function addExisting(P, id, jobKey, parentKey, parentJson)
  local old = rcall('HGET', jobKey, 'parentKey')
  if (not old) or old == parentKey or rcall('EXISTS', old) == 0 then
    if parentKey then
      if rcall('ZSCORE', P .. 'completed', id) then
        rcall('HSET', parentKey .. ':processed', jobKey, rcall('HGET', jobKey, 'returnvalue') or 'null')
        if not deferRelease then
          flushDeps(parentKey .. ':dependencies')
          releaseParentIfReady(parentKey, now)
        end
      else
        rcall('SADD', parentKey .. ':dependencies', jobKey)
      end
      rcall('HSET', jobKey, 'parentKey', parentKey, 'parent', parentJson)
    end
  elseif parentKey then
    if deferRelease then rcall('HSET', parentKey, 'flowAttachmentFailed', 1) end
    return -7
  end
  emit(P, 'duplicated', 'jobId', id)
  return id
end

-- keepLastIfActive: a duplicate of a job that is running is parked (the latest one wins) and
-- added when that job finishes (finish_jobs); the deduplication key then has no TTL.
local function parkIfActive(P, id, de, owner, name, data, opts)
  if not de.keepLastIfActive or not rcall('LPOS', P .. 'active', owner) then return false end
  local parkedKey = P .. 'dn:' .. de.id
  rcall('DEL', parkedKey)
  rcall('HSET', parkedKey, 'name', name, 'data', data, 'opts', opts, 'jid', id)
  rcall('PERSIST', P .. 'de:' .. de.id)
  emit(P, 'deduplicated', 'jobId', owner, 'deduplicationId', de.id, 'deduplicatedJobId', id)
  return true
end

-- Returns the id of the job that keeps the deduplication id, or nil when this job takes it.
local function deduplicate(P, id, de, timestamp, delay, name, data, opts)
  local deKey = P .. 'de:' .. de.id
  -- with keepLastIfActive the key never expires: the job's end clears it
  local ttl = not de.keepLastIfActive and tonumber(de.ttl) or 0
  local owner = rcall('GET', deKey)
  if owner and rcall('PTTL', deKey) == -1 and rcall('EXISTS', P .. owner) == 0 then
    rcall('DEL', deKey, P .. 'dn:' .. de.id)
    owner = nil
  end
  if owner then
    local ownerDelayed = rcall('ZSCORE', P .. 'delayed', owner)
    if de.replace then
      if not ownerDelayed then
        parkIfActive(P, id, de, owner, name, data, opts)
        return owner
      end
      rcall('ZREM', P .. 'delayed', owner)
      removeJobKeys(P .. owner)
      emitUncapped(P, 'removed', 'jobId', owner, 'prev', 'delayed')
      emit(P, 'deduplicated', 'jobId', id, 'deduplicationId', de.id, 'deduplicatedJobId', owner)
      rcall('DEL', P .. 'dn:' .. de.id)
      if ttl > 0 and not de.extend then
        rcall('SET', deKey, id, 'KEEPTTL')
      elseif ttl > 0 then
        rcall('SET', deKey, id, 'PX', ttl)
      else
        rcall('SET', deKey, id)
      end
      return nil
    end
    if parkIfActive(P, id, de, owner, name, data, opts) then return owner end
    if de.extend and (tonumber(de.ttl) or 0) > 0 then
      -- extended: by the ttl again, or, with keepLastIfActive, until the owner ends
      if de.keepLastIfActive then rcall('PERSIST', deKey) else rcall('PEXPIRE', deKey, ttl) end
    end
    emit(P, 'deduplicated', 'jobId', owner, 'deduplicationId', de.id, 'deduplicatedJobId', id)
    if de.reschedule and ownerDelayed then
      local due = timestamp + delay
      rcall('ZADD', P .. 'delayed', delayedScore(P, due), owner)
      rcall('HSET', P .. owner, 'delay', delay)
      emit(P, 'delayed', 'jobId', owner, 'delay', due)
      addDelayMarkerIfNeeded(P)
    end
    return owner
  end
  if ttl > 0 then
    rcall('SET', deKey, id, 'PX', ttl)
  else
    rcall('SET', deKey, id)
  end
  return nil
end

local function addRecord(r)
  local P = prefixes[tonumber(ARGV[r])]
  local q = queueInfo(P)
  local id = ARGV[r + 1]
  local name = ARGV[r + 2]
  local pi = tonumber(ARGV[r + 9])
  local parentKey, parentJson
  if pi > 0 then
    parentKey, parentJson = S[pi], S[pi + 1]
    if present[parentKey] or (id ~= '' and present[P .. id]) then
      if id ~= '' then present[P .. id] = true end
      return 'present'
    end
    if not known[parentKey] then
      if rcall('EXISTS', parentKey) == 0 then return -5 end
      known[parentKey] = true
    end
  end

  if id == '' then
    id = tostring(rcall('INCRBY', P .. 'id', (q.pendingIds or 0) + 1))
    q.pendingIds = 0
  else
    q.pendingIds = (q.pendingIds or 0) + 1
  end
  local jobKey = P .. id
  if rcall('EXISTS', jobKey) == 1 then
    return addExisting(P, id, jobKey, parentKey, parentJson)
  end

  local timestamp = ARGV[r + 5]
  if timestamp == '' then timestamp = ARGV[3] end
  local delay = ARGV[r + 6]
  local priority = ARGV[r + 7]
  local kind = ARGV[r + 8]
  local deid
  if #kind > 1 then
    local de = cjson.decode(S[tonumber(string.sub(kind, 3))])
    local owner = deduplicate(P, id, de, tonumber(timestamp), tonumber(delay), name, ARGV[r + 3],
      S[tonumber(ARGV[r + 4])])
    if owner then return owner end
    deid = de.id
    kind = string.sub(kind, 1, 1)
  end

  if parentKey then
    rcall('HSET', jobKey, 'name', name, 'data', ARGV[r + 3], 'opts', S[tonumber(ARGV[r + 4])],
      'timestamp', timestamp, 'delay', delay, 'priority', priority,
      'parentKey', parentKey, 'parent', parentJson)
  else
    rcall('HSET', jobKey, 'name', name, 'data', ARGV[r + 3], 'opts', S[tonumber(ARGV[r + 4])],
      'timestamp', timestamp, 'delay', delay, 'priority', priority)
  end
  if deid then rcall('HSET', jobKey, 'deid', deid) end
  emitUncapped(P, 'added', 'jobId', id, 'name', name)

  if kind == 's' or kind == 'l' then
    local list = kind == 's' and 'lpush' or 'rpush'
    if not q[list] then q[list] = {} end
    local l = q[list]
    l[#l + 1] = id
    q.marker = true
    emit(P, 'waiting', 'jobId', id)
  elseif kind == 'p' then
    addPrioritized(P, id, tonumber(priority))
    q.marker = true
    emit(P, 'waiting', 'jobId', id)
  elseif kind == 'd' then
    local due = tonumber(timestamp) + tonumber(delay)
    rcall('ZADD', P .. 'delayed', delayedScore(P, due), id)
    emit(P, 'delayed', 'jobId', id, 'delay', due)
    q.delayMarker = true
  else
    rcall('ZADD', P .. 'waiting-children', timestamp, id)
    emit(P, 'waiting-children', 'jobId', id)
    known[jobKey] = true
  end

  if parentKey then
    local d = listIn(deps, depsOrder, parentKey .. ':dependencies')
    d[#d + 1] = jobKey
  end
  return id
end

-- Redis commands take at most ~8000 unpacked arguments from Lua.
local function pushAll(cmd, key, items)
  for i = 1, #items, 5000 do
    rcall(cmd, key, unpack(items, i, math.min(i + 4999, #items)))
  end
end

local results = {0}
for r = pos, #ARGV, 10 do
  local result = addRecord(r)
  if returnIds then results[#results + 1] = result end
end

for _, dk in ipairs(depsOrder) do flushDeps(dk) end
for i = 1, nPrefixes do
  local q = Q[prefixes[i]]
  if q then
    flushPending(q)
    if q.lpush then pushAll('LPUSH', q.P .. 'wait', q.lpush) end
    if q.rpush then pushAll('RPUSH', q.P .. 'wait', q.rpush) end
    if q.marker then addBaseMarkerIfNeeded(q.P) end
    if q.delayMarker then addDelayMarkerIfNeeded(q.P) end
  end
end
if opened then
  rcall('SADD', opened .. ':dependencies', opened .. ':unsealed')
  rcall('HSET', opened, 'fanout', 'open', 'fanoutAdded', 0)
end
if fanOut then
  rcall('HINCRBY', fanOut, 'fanoutAdded', fanOutItems - nPresent)
end
for _, parentKey in ipairs(releases) do
  if rcall('HDEL', parentKey, 'flowAttachmentFailed') == 0 then
    releaseParentIfReady(parentKey, now)
  end
end
if dropGuard and guard ~= '' then rcall('DEL', guard) end
if fanOut and not returnIds then return {0, nPresent} end
return results
