/**
 * The Lua of the Redis session store (redis-session-store.ts): one function
 * per store operation, all in one script (SESSION_BATCH_SCRIPT) that runs a
 * batch of operations in call order. Each operation runs atomically in Redis
 * (a whole batch does), so two nodes working on one session (a takeover, a
 * sweep) never interleave inside an operation. ioredis runs the script with
 * EVALSHA (defineCommand), falling back to EVAL once per connection.
 *
 * Keys, all under the store's prefix P (docs/scaling.md, "The session store"):
 *   P epoch        string: the store's epoch (SET NX); gone after FLUSHALL or an empty restart
 *   P h:<id>       hash: the session record (st a|d, ca, aa, da, ls, as, lc, cb, ab, ag, t, dt, dg, o)
 *   P x:<id>       stream: the held messages, entry id <seq>-0, fields c (cumulative bytes), b (binary), d (data)
 *   P r:<id>       hash: cseq → reply seqs ("" none yet, "1,2", "*" too many to remember);
 *                  n<cseq> → "<node>:<time>": the node that counted it and when (Redis time, ms), until it
 *                  ends without a reply (endRequest); a reply of that node is accepted even once it is stale;
 *                  "<empty>:<time>" once that node released it (releaseRequests: it will not run it);
 *                  the newest maxRememberedReplies requests, and any counted one not finished (beginRequest);
 *                  w<node> → the last time (Redis time, ms) that node, holding the session, was told to wait on
 *                  one of its requests (beginRequest's 'pending'): its counts of the session are worked on until then
 *   P node:<node>  string, PX leaseTtl: the node (one store instance) is alive; renewed with its leases
 *   P leases       zset: attached session → lease deadline (Redis time, ms)
 *   P detached     zset: detached session → detach order (P dseq, a counter): the oldest detach first
 *   P tombs        zset: ended session → creation order (P tseq); P tomb hash: id → until \n reason \n detail
 *                  (until: the store's clock; a resume is told reason and detail until then)
 *   P bytes, P msgs  counters: held bytes and messages over all sessions (the cluster-wide memory bound)
 *   P all          zset: every live session → its order (P mseq, a counter): the members of a broadcast
 *   P m:<topic>    zset: the sessions in the topic → join order (P mseq): the members of a publish
 *   P fq           list: fan-outs not finished yet (job ids, oldest first); P fj:<job> hash: the job
 *                  (k members key, c the last member score done, x the highest score it covers, d data, b binary,
 *                  i the id its caller gave the fan-out, '' none)
 *   P node:<node>  pub/sub channel: the fan-out tells each node which of its attached sessions got which seq
 *
 * The script's ARGV starts with the same eleven values (the ten common ones
 * and the calling node's id); every
 * operation returns { letters, … }: letters are the sessions it ended, each
 * { id, reason, detail, entries, refused } so the node that ran the call hands
 * them to its application (R12).
 *
 * Standalone Redis (or a primary) only: a script touches keys it does not
 * declare (other sessions, when a bound ends them), which Redis Cluster forbids.
 */

/** Held bytes are counted from `c`, the cumulative bytes appended up to an entry, so an ack trims in O(1) reads. */
const PRELUDE = `
local P = ARGV[1]
local WINDOW = tonumber(ARGV[2])
local MAX_MSGS = tonumber(ARGV[3])
local MAX_BYTES = tonumber(ARGV[4])
local MAX_TOTAL = tonumber(ARGV[5])
local MAX_DETACHED = tonumber(ARGV[6])
local MAX_REPLIES = tonumber(ARGV[7])
local LEASE = tonumber(ARGV[8])
local KEY_TTL = tonumber(ARGV[9])
local tm = redis.call('TIME')
local RNOW = tonumber(tm[1]) * 1000 + math.floor(tonumber(tm[2]) / 1000)
local NOW = RNOW
if ARGV[10] ~= '' then NOW = tonumber(ARGV[10]) end
local NODE = ARGV[11]
local DET, LEASES, TOMBS, TOMB = P .. 'detached', P .. 'leases', P .. 'tombs', P .. 'tomb'
local BYTES, MSGS, DSEQ, TSEQ, EPOCH = P .. 'bytes', P .. 'msgs', P .. 'dseq', P .. 'tseq', P .. 'epoch'
local LETTERS = {}
local ALL, MSEQ, FQ = P .. 'all', P .. 'mseq', P .. 'fq'
local function mkey(topic) return P .. 'm:' .. topic end

local function S(n) return string.format('%.0f', n) end
local function hkey(id) return P .. 'h:' .. id end
local function xkey(id) return P .. 'x:' .. id end
local function rkey(id) return P .. 'r:' .. id end

local function touch(id)
  redis.call('PEXPIRE', hkey(id), KEY_TTL)
  redis.call('PEXPIRE', xkey(id), KEY_TTL)
  redis.call('PEXPIRE', rkey(id), KEY_TTL)
end

-- Tombstones in order of creation (a counter: equal times keep their order), each with its own end.
local function tombstone(id, kind, detail)
  redis.call('ZADD', TOMBS, redis.call('INCR', TSEQ), id)
  redis.call('HSET', TOMB, id, S(NOW + WINDOW) .. '\\n' .. kind .. '\\n' .. detail)
  local extra = redis.call('ZCARD', TOMBS) - MAX_DETACHED
  if extra > 0 then
    for _, old in ipairs(redis.call('ZRANGE', TOMBS, 0, extra - 1)) do redis.call('HDEL', TOMB, old) end
    redis.call('ZREMRANGEBYRANK', TOMBS, 0, extra - 1)
  end
end

-- Ends a session: its held messages become one letter (with the refused one, if any); a tombstone for expiry and bounds.
local function end_session(id, reason, detail, refused)
  local f = redis.call('HMGET', hkey(id), 'ls', 'as', 'cb', 'ab', 't')
  local entries = redis.call('XRANGE', xkey(id), '-', '+')
  redis.call('DEL', hkey(id), xkey(id), rkey(id))
  redis.call('ZREM', DET, id)
  redis.call('ZREM', LEASES, id)
  -- No longer a member of anything: no fan-out appends to it.
  redis.call('ZREM', ALL, id)
  if f[5] and f[5] ~= '[]' then
    for _, topic in ipairs(cjson.decode(f[5])) do redis.call('ZREM', mkey(topic), id) end
  end
  if f[1] then
    local n = tonumber(f[1]) - tonumber(f[2])
    local b = tonumber(f[3]) - tonumber(f[4])
    if n ~= 0 then redis.call('DECRBY', MSGS, n) end
    if b ~= 0 then redis.call('DECRBY', BYTES, b) end
  end
  if reason ~= 'ended' and reason ~= 'unknown' then
    if reason == 'expired' then tombstone(id, 'expired', detail)
    elseif reason == 'overflow' then tombstone(id, 'overflow', detail)
    else tombstone(id, 'overflow', reason .. ': ' .. detail) end
  end
  if #entries > 0 or refused then table.insert(LETTERS, { id, reason, detail, entries, refused and 1 or 0 }) end
end

local function expired_detail() return 'detached for the resume window (' .. S(WINDOW) .. ' ms)' end

-- The session's state ('a' | 'd') if it lives; one past its window is expired here, before anyone sees it.
local function live(id)
  local f = redis.call('HMGET', hkey(id), 'st', 'da')
  if not f[1] then return false end
  if f[1] == 'd' and NOW - tonumber(f[2]) >= WINDOW then
    end_session(id, 'expired', expired_detail())
    return false
  end
  return f[1]
end

-- Why id cannot be resumed: its tombstone while it lasts, else unknown.
local function split_tomb(t)
  local i = string.find(t, '\\n', 1, true)
  local j = string.find(t, '\\n', i + 1, true)
  return tonumber(string.sub(t, 1, i - 1)), string.sub(t, i + 1, j - 1), string.sub(t, j + 1)
end

local function gone(id)
  local t = redis.call('HGET', TOMB, id)
  if t then
    local untilMs, kind, detail = split_tomb(t)
    if untilMs > NOW then return { kind, detail } end
  end
  return { 'unknown', 'no such session' }
end

-- Every seq up to seq is acknowledged: trim them; returns how many.
local function trim(id, seq)
  local f = redis.call('HMGET', hkey(id), 'as', 'ab')
  local acked = tonumber(f[1])
  if seq <= acked then return 0 end
  local e = redis.call('XRANGE', xkey(id), S(seq) .. '-0', S(seq) .. '-0')
  local cum = tonumber(e[1][2][2])
  local freed = cum - tonumber(f[2])
  redis.call('XTRIM', xkey(id), 'MINID', S(seq + 1) .. '-0')
  redis.call('HSET', hkey(id), 'as', S(seq), 'ab', S(cum))
  redis.call('DECRBY', MSGS, seq - acked)
  if freed ~= 0 then redis.call('DECRBY', BYTES, freed) end
  return seq - acked
end

local function detach_one(id)
  redis.call('HSET', hkey(id), 'st', 'd', 'da', S(NOW))
  redis.call('ZREM', LEASES, id)
  redis.call('ZADD', DET, redis.call('INCR', DSEQ), id)
  touch(id)
  local count = redis.call('ZCARD', DET)
  while count > MAX_DETACHED do
    local oldest = redis.call('ZRANGE', DET, 0, 0)[1]
    end_session(oldest, 'evicted', S(count) .. ' detached sessions, over sessions.maxDetachedSessions ' .. S(MAX_DETACHED))
    count = redis.call('ZCARD', DET)
  end
end

local function record(id) return redis.call('HGETALL', hkey(id)) end

-- Which node counted request c of id (and when), if it has not finished it without a reply: node, time | nil.
-- The node is '' once it released the count (releaseRequests): nobody's, the next node asked about it takes it over.
local function counter(id, c)
  local n = redis.call('HGET', rkey(id), 'n' .. c)
  if not n then return nil end
  local i = string.find(n, ':', 1, true)
  return string.sub(n, 1, i - 1), tonumber(string.sub(n, i + 1))
end

local function count_here(id, c)
  redis.call('HSET', rkey(id), 'n' .. c, NODE .. ':' .. S(RNOW))
end

-- The session's stream after seq (trimming up to it), or the reason a resume from seq cannot go on.
local function read_after(id, seq)
  local f = redis.call('HMGET', hkey(id), 'ls', 'as')
  local last, acked = tonumber(f[1]), tonumber(f[2])
  if seq > last then return false, 'restarted', 'lastSeq ' .. S(seq) .. ' is beyond the last seq this store assigned, ' .. S(last) end
  if seq < acked then
    return false, 'overflow', 'lastSeq ' .. S(seq) .. ' is behind the acknowledged ' .. S(acked) .. ': seqs ' .. S(seq + 1) .. '…' .. S(acked) .. ' are no longer held'
  end
  trim(id, seq)
  return redis.call('XRANGE', xkey(id), '-', '+')
end

local function attach_here(id)
  -- n: the holder node, whom the fan-out tells (the calling node, NODE)
  redis.call('HSET', hkey(id), 'st', 'a', 'aa', S(NOW), 'n', NODE)
  local gen = redis.call('HINCRBY', hkey(id), 'ag', 1)
  redis.call('ZREM', DET, id)
  redis.call('ZADD', LEASES, RNOW + LEASE, id)
  touch(id)
  return gen
end

local function ensure_epoch(candidate)
  redis.call('SET', EPOCH, candidate, 'NX')
  return redis.call('GET', EPOCH)
end
`;

/** Member sessions appended to per script call, over all its fan-out operations: one call holds Redis a few ms at most. */
export const FANOUT_CHUNK = 512;

/**
 * The fan-out (docs/sessions.md, "Fan-out in the store"): the publishing
 * node's script appends a broadcast or publish to each member session's
 * stream, and tells each node holding one of them attached which seq it got
 * (one PUBLISH per node per chunk: the message once, then its pairs). A
 * member whose append ends it (a bound) is told to its holder with seq 0 and
 * the reason. Needs OPS (the append), so it comes after the table is made.
 *
 * The notification, on channel P node:<node>: '1' or '0' (binary), then
 * ' <fan-out id>' when its caller gave one (SessionFanOut: the publishing
 * node tells its own fan-out's late notification from the others), then per
 * session a line '\n<id> <seq>' or '\n<id> 0 <reason> <detail>', then
 * '\n\n' and the data.
 */
const FANOUT_LIB = `
local FAN_LEFT = ${FANOUT_CHUNK}
local FAN_DONE = 0
-- A refusal (fan_refused) that stopped this call's fan-out work; the operation raises it when it did nothing else.
local FAN_ERR = nil

local function fan_errtext(e)
  if type(e) == 'table' then return tostring(e.err or e.ok or 'error') end
  return tostring(e)
end

-- Redis refuses a script's writes for these only before its first write (out of memory, a read-only replica, a
-- failed save, too few replicas): nothing was written, so the call may fail whole and be made again. Any other
-- error while appending to a member is that member's own (its keys are not what the store wrote).
local function fan_refused(e)
  local m = fan_errtext(e)
  for _, code in ipairs({ 'OOM ', 'READONLY ', 'MISCONF ', 'NOREPLICAS ' }) do
    if string.sub(m, 1, #code) == code then return true end
  end
  return false
end

-- The notification's first line after the binary flag: ' <id>' for a fan-out its caller named, else nothing.
local function fan_id(id)
  if id == '' then return '' end
  return ' ' .. id
end

-- Appends to the members after score cursor (up to max) while the call's budget lasts. Returns the score of the
-- last member finished (the job goes on after it: no member is appended to twice) and true once none is left.
local function fan_run(key, cursor, max, data, bin, fid)
  if FAN_LEFT <= 0 then return cursor, false end
  local want = FAN_LEFT
  local got = redis.call('ZRANGEBYSCORE', key, '(' .. S(cursor), S(max), 'WITHSCORES', 'LIMIT', 0, want)
  local notes, order = {}, {}
  local function note(node, line)
    local l = notes[node]
    if not l then l = {}; notes[node] = l; order[#order + 1] = node end
    l[#l + 1] = line
  end
  -- The fast path's counters: added to P msgs / P bytes once per chunk (flushed before any slow path reads them).
  local bytes = string.len(data)
  local addN, addB = 0, 0
  local total = tonumber(redis.call('GET', BYTES) or '0')
  local function flush()
    if addN > 0 then
      redis.call('INCRBY', MSGS, addN)
      redis.call('INCRBY', BYTES, addB)
      total = total + addB
      addN, addB = 0, 0
    end
  end
  -- at: the member being worked on (its index in got); done: the score of the last member finished.
  local at, done = 1, cursor
  local function walk()
    while at < #got do
      local id = got[at]
      -- One read per member: its state, holder, detach time and the counters of its bounds.
      local h = redis.call('HMGET', hkey(id), 'st', 'n', 'da', 'ls', 'as', 'cb', 'ab')
      if not h[1] then
        -- Gone (its keys expired with no node sweeping): no longer a member.
        redis.call('ZREM', key, id)
      else
        local ls, cb = tonumber(h[4]), tonumber(h[6])
        local held = ls - tonumber(h[5])
        if not (h[1] == 'd' and NOW - tonumber(h[3]) >= WINDOW) and held + 1 <= MAX_MSGS
          and cb - tonumber(h[7]) + bytes <= MAX_BYTES and total + addB + bytes <= MAX_TOTAL then
          -- Lives and within every bound: the append's write alone (what append does past its checks).
          local seq = ls + 1
          cb = cb + bytes
          redis.call('XADD', xkey(id), 'MAXLEN', S(MAX_MSGS), S(seq) .. '-0', 'c', S(cb), 'b', bin, 'd', data)
          -- A stream holding nothing may be new (XADD made it): it expires with its session's keys.
          if held == 0 and redis.call('PTTL', xkey(id)) == -1 then redis.call('PEXPIRE', xkey(id), KEY_TTL) end
          redis.call('HSET', hkey(id), 'ls', S(seq), 'cb', S(cb))
          addN, addB = addN + 1, addB + bytes
          FAN_DONE = FAN_DONE + 1
          if h[1] == 'a' and h[2] then note(h[2], id .. ' ' .. S(seq)) end
        else
          -- Expired, or a bound is hit: the append itself decides (it ends the session, with its letter).
          flush()
          local r = OPS['append']({ id, data, bin, '', '', '1' })
          total = tonumber(redis.call('GET', BYTES) or '0')
          if r[2] == 1 then
            FAN_DONE = FAN_DONE + 1
            if h[1] == 'a' and h[2] then note(h[2], id .. ' ' .. S(r[3])) end
          elseif r[3] == 'unknown' then
            -- Expired just now: not a member any more, so not refused either (its own letter says expired).
            local last = LETTERS[#LETTERS]
            if last and last[1] == id and last[2] == 'unknown' then LETTERS[#LETTERS] = nil end
          else
            -- A bound ended it: the message goes into its dead letter with the rest (seq 0: it never got one).
            for _, l in ipairs(LETTERS) do
              if l[1] == id and l[5] == 1 then l[5] = 0; table.insert(l[4], { '0-0', { 'c', '0', 'b', bin, 'd', data } }) end
            end
            if h[2] then note(h[2], id .. ' 0 ' .. tostring(r[3]) .. ' ' .. tostring(r[4])) end
          end
        end
      end
      done = tonumber(got[at + 1])
      at = at + 2
    end
  end
  -- An error does not undo what was written before it (Redis has no rollback), so it never makes the job start
  -- over: a member's own error makes it a dead letter (reason fanout, the message, seq 0) and the walk goes on
  -- after it; a refusal stops this call's fan-out work where it is (nothing was written: see fan_refused).
  while at < #got do
    local ok, err = pcall(walk)
    if ok then break end
    if fan_refused(err) then
      FAN_ERR = err
      break
    end
    local id = got[at]
    -- What an append that failed half-way (through append, say) counted is read again.
    flush()
    total = tonumber(redis.call('GET', BYTES) or '0')
    table.insert(LETTERS, { id, 'fanout', 'a fan-out could not append to session ' .. id .. ' (' .. fan_errtext(err)
      .. '): the session goes on without this message', { { '0-0', { 'c', '0', 'b', bin, 'd', data } } }, 0 })
    done = tonumber(got[at + 1])
    at = at + 2
  end
  flush()
  FAN_LEFT = FAN_LEFT - (at - 1) / 2
  -- The holders are told of every member appended to, whatever came after it.
  for _, node in ipairs(order) do
    redis.call('PUBLISH', P .. 'node:' .. node, bin .. fid .. '\\n' .. table.concat(notes[node], '\\n') .. '\\n\\n' .. data)
  end
  if FAN_ERR then
    FAN_LEFT = 0
    return done, false
  end
  return done, #got / 2 < want
end

-- Works on the unfinished fan-outs, oldest first, while this call's budget lasts; true if some are left.
local function fan_queue()
  while FAN_LEFT > 0 do
    local jid = redis.call('LINDEX', FQ, 0)
    if not jid then return false end
    local jk = P .. 'fj:' .. jid
    local j = redis.call('HMGET', jk, 'k', 'c', 'x', 'd', 'b', 'i')
    if not j[1] then
      redis.call('LPOP', FQ)
    else
      local from = tonumber(j[2])
      local cursor, finished = fan_run(j[1], from, tonumber(j[3]), j[4], j[5], fan_id(j[6] or ''))
      if finished then
        redis.call('LPOP', FQ)
        redis.call('DEL', jk)
      elseif cursor ~= from then
        redis.call('HSET', jk, 'c', S(cursor))
      end
    end
  end
  return redis.call('LLEN', FQ) > 0
end

-- The fencing check of a fan-out made by request c of session id in its handler's turn on this node (NODE), which
-- then held the session's attach generation gen ('' unknown: unchecked). Refused (the detail) when another node
-- attached the session since (ag moved on) and the request's count is no longer this node's: another node took it
-- over (its counter names that node) or finished it there (gone), so the request ran there again and made this
-- fan-out there; made here too, its members would get it twice (a node frozen past its lease, whose fan-out reached
-- Redis only when it continued). Passes: the same generation (no other node can have run the request); a count still
-- this node's (a slow node, not a dead one: the other waits for it, 'pending', and this run is the only one, as its
-- reply is kept by append); a session gone (no hold to compare: its requests run nowhere any more). A count of this
-- node's forgotten past maxRememberedReplies (its reply stored in an earlier batch than this fan-out, and that many
-- later requests counted elsewhere before this one arrived) is refused too, although the request ran here alone: the
-- push is then a dead letter on this node, not a duplicate (R12), in an order that needs a stall between two batches.
local function fan_fenced(id, gen, c)
  if gen == '' then return nil end
  local ag = redis.call('HGET', hkey(id), 'ag')
  if not ag or ag == gen then return nil end
  local node = counter(id, c)
  if node == NODE then return nil end
  local now = 'none: ended or forgotten'
  if node == '' then now = 'none: released' elseif node then now = 'node ' .. node end
  return 'made by request ' .. c .. ' of session ' .. id .. ' on this node, which another node has attached since (attach '
    .. ag .. ', this node held ' .. gen .. ') and whose count this node no longer holds (' .. now
    .. '): the request runs there now, its fan-outs made there'
end

-- A refusal that stopped the fan-out work of an operation that did nothing else: the operation fails whole.
local function fan_raise_if_idle()
  if FAN_ERR and FAN_DONE == 0 and #LETTERS == 0 then error(FAN_ERR) end
end
`;

/** An operation's body: its arguments are `A[1…]` (after the common ones); it returns `{ LETTERS, … }`. */
function op(body: string): string {
  return body;
}

/** The operations by name, each the body of a Lua function of `A` (its arguments). */
export const SESSION_OPS = {
  /** A[1] candidate epoch → { letters, epoch } */
  epoch: op(`return { LETTERS, ensure_epoch(A[1]) }`),

  /**
   * A[1] id, [12] token digest, [13] owner ('' with [14] '0': none), [15] data JSON, [16] candidate epoch,
   * [17] this node's id (its fan-out channel; '' none) → { letters, ok, epoch, record }
   */
  create: op(`
local id = A[1]
local epoch = ensure_epoch(A[6])
if redis.call('EXISTS', hkey(id)) == 1 or redis.call('HEXISTS', TOMB, id) == 1 then return { LETTERS, 0 } end
redis.call('HSET', hkey(id), 'st', 'a', 'ca', S(NOW), 'aa', S(NOW), 'ls', '0', 'as', '0', 'lc', '0', 'cb', '0', 'ab', '0', 'ag', '1', 't', '[]', 'dt', A[5], 'dg', A[2])
if A[4] == '1' then redis.call('HSET', hkey(id), 'o', A[3]) end
if A[7] and A[7] ~= '' then redis.call('HSET', hkey(id), 'n', A[7]) end
redis.call('ZADD', ALL, redis.call('INCR', MSEQ), id)
redis.call('ZADD', LEASES, RNOW + LEASE, id)
touch(id)
return { LETTERS, 1, epoch, record(id) }`),

  /** A[1] id → { letters, 1, record } | { letters, 0, reason, detail } */
  get: op(`
local id = A[1]
if not live(id) then local g = gone(id); return { LETTERS, 0, g[1], g[2] } end
return { LETTERS, 1, record(id) }`),

  /** A[1] id, [12] '1' if the claim has an epoch, [13] the claimed epoch → as wsSessGet, or { letters, 0, 'restarted', current epoch or '' } */
  verify: op(`
local id = A[1]
if A[2] == '1' then
  local e = redis.call('GET', EPOCH)
  if e ~= A[3] then return { LETTERS, 0, 'restarted', e or '' } end
end
if not live(id) then local g = gone(id); return { LETTERS, 0, g[1], g[2] } end
return { LETTERS, 1, record(id) }`),

  /**
   * A[1] id, [12] data, [13] binary '1'|'0', [14] the attach generation this node holds ('' none known:
   * unchecked), [15] the request it answers ('' none), [16] max seqs per reply → { letters, 1, seq } | { letters, 0, reason, detail } (reason `moved`: [14] is stale).
   * The bounds are checked before the XADD, so its exact MAXLEN (the session's
   * own bound) never trims anything: it is a guard, not a policy.
   */
  append: op(`
local id = A[1]
local data = A[2]
local bytes = string.len(data)
if not live(id) then
  local g = gone(id)
  local detail = 'session ' .. id .. ' is gone (' .. g[1] .. ': ' .. g[2] .. ')'
  table.insert(LETTERS, { id, 'unknown', detail, {}, 1 })
  return { LETTERS, 0, 'unknown', detail }
end
local f = redis.call('HMGET', hkey(id), 'ls', 'as', 'cb', 'ab', 'ag')
-- A node whose hold is stale (another node attached the session since): refused, nothing kept, no letter.
-- Except the reply of a request this node counted: the request's outcome, which the new holder waits for
-- (beginRequest's 'pending') and writes in seq order.
if A[4] ~= '' and f[5] ~= A[4] and not (A[5] ~= '' and counter(id, A[5]) == NODE) then
  return { LETTERS, 0, 'moved', 'session ' .. id .. ' was attached elsewhere since (attach ' .. tostring(f[5]) .. ', this node held ' .. A[4] .. ')' }
end
local held = tonumber(f[1]) - tonumber(f[2])
local heldBytes = tonumber(f[3]) - tonumber(f[4])
if held + 1 > MAX_MSGS or heldBytes + bytes > MAX_BYTES then
  local detail
  if held + 1 > MAX_MSGS then detail = S(held + 1) .. ' unacknowledged messages, over sessions.maxMessages ' .. S(MAX_MSGS)
  else detail = S(heldBytes + bytes) .. ' unacknowledged bytes, over sessions.maxBytes ' .. S(MAX_BYTES) end
  end_session(id, 'overflow', detail, true)
  return { LETTERS, 0, 'overflow', detail }
end
local total = tonumber(redis.call('GET', BYTES) or '0')
if total + bytes > MAX_TOTAL then
  local detail = S(total + bytes) .. ' bytes held by all sessions, over sessions.maxBufferedBytes ' .. S(MAX_TOTAL)
  -- Detached sessions are the least likely to drain: the oldest make room first.
  local from = 0
  while total + bytes > MAX_TOTAL do
    local batch = redis.call('ZRANGE', DET, from, from + 63)
    if #batch == 0 then break end
    for _, other in ipairs(batch) do
      if total + bytes <= MAX_TOTAL then break end
      if other == id then from = from + 1 else end_session(other, 'memory', detail) end
      total = tonumber(redis.call('GET', BYTES) or '0')
    end
  end
  if total + bytes > MAX_TOTAL then
    end_session(id, 'memory', detail, true)
    return { LETTERS, 0, 'memory', detail }
  end
end
local seq = tonumber(f[1]) + 1
local cum = tonumber(f[3]) + bytes
redis.call('XADD', xkey(id), 'MAXLEN', S(MAX_MSGS), S(seq) .. '-0', 'c', S(cum), 'b', A[3], 'd', data)
if redis.call('PTTL', xkey(id)) == -1 then redis.call('PEXPIRE', xkey(id), KEY_TTL) end
redis.call('HSET', hkey(id), 'ls', S(seq), 'cb', S(cum))
redis.call('INCRBY', BYTES, bytes)
redis.call('INCR', MSGS)
if A[5] ~= '' then
  -- The reply of request A[5], remembered with it (as wsSessRememberReply): no window where it is stored but not known.
  local seqs = redis.call('HGET', rkey(id), A[5])
  if seqs and seqs ~= '*' then
    local n = 0
    if seqs ~= '' then n = 1; for _ in string.gmatch(seqs, ',') do n = n + 1 end end
    if n >= tonumber(A[6]) then seqs = '*' elseif seqs == '' then seqs = S(seq) else seqs = seqs .. ',' .. S(seq) end
    redis.call('HSET', rkey(id), A[5], seqs)
  end
end
return { LETTERS, 1, seq }`),

  /** A[1] id, [12] seq → { letters, 1, trimmed } | { letters, 0, error } */
  ack: op(`
local id = A[1]
local seq = tonumber(A[2])
if not live(id) then return { LETTERS, 0, 'session ' .. id .. ' is gone' } end
local last = tonumber(redis.call('HGET', hkey(id), 'ls'))
if seq > last then return { LETTERS, 0, 'ack ' .. S(seq) .. ' is beyond the last seq sent, ' .. S(last) } end
return { LETTERS, 1, trim(id, seq) }`),

  /** A[1] id, [12] seq → { letters, 1, entries } | { letters, 0, reason, detail } */
  readAfter: op(`
local id = A[1]
if not live(id) then local g = gone(id); return { LETTERS, 0, g[1], g[2] } end
local entries, reason, detail = read_after(id, tonumber(A[2]))
if not entries then return { LETTERS, 0, reason, detail } end
return { LETTERS, 1, entries }`),

  /**
   * A[1] id, [12] seq → { letters, 1, generation, entries, record } | { letters, 0, reason, detail }: readAfter, then
   * (when it can go on) attach, at one moment: nothing the previous holder counts or appends can fall in between.
   */
  resume: op(`
local id = A[1]
if not live(id) then local g = gone(id); return { LETTERS, 0, g[1], g[2] } end
local entries, reason, detail = read_after(id, tonumber(A[2]))
if not entries then return { LETTERS, 0, reason, detail } end
local gen = attach_here(id)
return { LETTERS, 1, gen, entries, record(id) }`),

  /**
   * A[1] id, [12] seq → { letters, 1, entries after max(seq, acknowledged) } | { letters, 0, reason, detail }:
   * as readAfter, but it trims nothing (a node filling a seq gap has written more than its client may have).
   */
  peekAfter: op(`
local id = A[1]
local seq = tonumber(A[2])
if not live(id) then local g = gone(id); return { LETTERS, 0, g[1], g[2] } end
local f = redis.call('HMGET', hkey(id), 'ls', 'as')
local last, acked = tonumber(f[1]), tonumber(f[2])
if seq > last then return { LETTERS, 0, 'restarted', 'lastSeq ' .. S(seq) .. ' is beyond the last seq this store assigned, ' .. S(last) } end
if acked > seq then seq = acked end
return { LETTERS, 1, redis.call('XRANGE', xkey(id), S(seq + 1) .. '-0', '+') }`),

  /**
   * A[1] id, [12] cseq, [13] the attach generation this node holds ('' unchecked) →
   * { letters, 'new' } | { letters, 'duplicate', seqs|'*' } | { letters, 'pending', 1 here | 0 } | { letters, 'gap', expected }
   * | { letters, 'moved' } | { letters, 'unknown' }.
   * A request counted by a node that has not finished it: 'pending' while that node lives (its key) and less than a
   * lease has passed since the count; else this node takes the count over ('new': it runs the request).
   */
  beginRequest: op(`
local id = A[1]
local cseq = tonumber(A[2])
if not live(id) then return { LETTERS, 'unknown' } end
local f = redis.call('HMGET', hkey(id), 'lc', 'ag')
if A[3] ~= '' and f[2] ~= A[3] then return { LETTERS, 'moved' } end
-- This node waits on an earlier request of the session (it asks again until that one is settled): its own later
-- counts, which it runs once the wait ends, are being worked on. Noted, so that their age runs from now (below).
local function waiting(here)
  redis.call('HSET', rkey(id), 'w' .. NODE, S(RNOW))
  return { LETTERS, 'pending', here }
end
local last = tonumber(f[1])
if cseq == last + 1 then
  redis.call('HSET', hkey(id), 'lc', S(cseq))
  redis.call('HSET', rkey(id), S(cseq), '')
  count_here(id, S(cseq))
  if cseq - MAX_REPLIES > 0 then
    -- Forgotten past the window, unless its count is unfinished (no reply yet, its counter known): a resumed client
    -- re-sends it, and its node counts the later ones as they arrive while it waits on this one ('pending'). Forgotten,
    -- it would read as long answered (duplicate '*') and run nowhere, or where it was counted after the session moved.
    -- Kept until the session's keys go: one field pair per request counted by a node that never finished it.
    local old = S(cseq - MAX_REPLIES)
    if redis.call('HGET', rkey(id), old) ~= '' or redis.call('HEXISTS', rkey(id), 'n' .. old) == 0 then
      redis.call('HDEL', rkey(id), old, 'n' .. old)
    end
  end
  if redis.call('PTTL', rkey(id)) == -1 then redis.call('PEXPIRE', rkey(id), KEY_TTL) end
  return { LETTERS, 'new' }
end
if cseq <= last then
  local seqs = redis.call('HGET', rkey(id), S(cseq))
  if not seqs then return { LETTERS, 'duplicate', '*' } end
  if seqs == '' then
    local node, at = counter(id, S(cseq))
    if node == NODE then return waiting(1) end
    if node then
      -- A count's age runs from the later of the count and the last time its node waited on an earlier request of the
      -- session: a node that counted the client's later requests while it waits (a lease, on a frozen node's count)
      -- still runs them when its wait ends. Taken over by their age meanwhile, they ran twice, and out of order: the
      -- taker ran them after the waiting node had run the ones counted after them (test/server/sessions.nodes.test.ts).
      local worked = tonumber(redis.call('HGET', rkey(id), 'w' .. node) or '0')
      if worked > at then at = worked end
      if node ~= '' and redis.call('EXISTS', P .. 'node:' .. node) == 1 and RNOW - at < LEASE then return waiting(0) end
      -- Its node died (its key lapsed), left it unfinished for a whole lease, or released it: this node runs it.
      count_here(id, S(cseq))
      return { LETTERS, 'new' }
    end
  end
  return { LETTERS, 'duplicate', seqs }
end
return { LETTERS, 'gap', last + 1 }`),

  /**
   * A[1] id, [12…] cseqs → { letters }: this node will not run these requests (its connection left them unrun: the
   * client re-sends them on its next resume). Each one still counted by this node and unfinished is released: the
   * next node asked about it (this one too) takes it over at once, instead of waiting a lease for it.
   */
  releaseRequests: op(`
local id = A[1]
if not live(id) then return { LETTERS } end
for i = 2, #A do
  local c = A[i]
  if redis.call('HGET', rkey(id), c) == '' and counter(id, c) == NODE then redis.call('HSET', rkey(id), 'n' .. c, ':' .. S(RNOW)) end
end
return { LETTERS }`),

  /** A[1] id, [12] cseq → { letters }: the request ran and sent no reply (a duplicate of it is answered at once). */
  endRequest: op(`
local id = A[1]
if not live(id) then return { LETTERS } end
if redis.call('HGET', rkey(id), A[2]) == '' then redis.call('HDEL', rkey(id), 'n' .. A[2]) end
return { LETTERS }`),

  /** A[1] id, [12] cseq, [13] seq, [14] max seqs per reply → { letters } */
  rememberReply: op(`
local id = A[1]
if not live(id) then return { LETTERS } end
local seqs = redis.call('HGET', rkey(id), A[2])
if not seqs or seqs == '*' then return { LETTERS } end
local n = 0
if seqs ~= '' then n = 1; for _ in string.gmatch(seqs, ',') do n = n + 1 end end
if n >= tonumber(A[4]) then seqs = '*' elseif seqs == '' then seqs = A[3] else seqs = seqs .. ',' .. A[3] end
redis.call('HSET', rkey(id), A[2], seqs)
return { LETTERS }`),

  /** A[1] id, [12] 'join'|'leave', [13] topic → { letters, 1|0 } */
  topic: op(`
local id = A[1]
if not live(id) then return { LETTERS, 0 } end
local topics = cjson.decode(redis.call('HGET', hkey(id), 't'))
local at = nil
for i, t in ipairs(topics) do if t == A[3] then at = i end end
if A[2] == 'join' then
  if at then return { LETTERS, 0 } end
  table.insert(topics, A[3])
  redis.call('ZADD', mkey(A[3]), redis.call('INCR', MSEQ), id)
else
  if not at then return { LETTERS, 0 } end
  table.remove(topics, at)
  redis.call('ZREM', mkey(A[3]), id)
end
local text = '[]'
if #topics > 0 then text = cjson.encode(topics) end
redis.call('HSET', hkey(id), 't', text)
return { LETTERS, 1 }`),

  /** A[1] id, [12] data JSON → { letters, 1|0 } */
  setData: op(`
local id = A[1]
if not live(id) then return { LETTERS, 0 } end
redis.call('HSET', hkey(id), 'dt', A[2])
return { LETTERS, 1 }`),

  /**
   * A[1] id → { letters, 0 } | { letters, 1, attach generation, last seq }: attached to the calling node (NODE):
   * from now on the fan-out tells this node of the session's new seqs; the last seq tells it whether one
   * came between its replay read and this attach (told to no node: it reads it).
   */
  attach: op(`
local id = A[1]
if not live(id) then return { LETTERS, 0 } end
return { LETTERS, 1, attach_here(id), tonumber(redis.call('HGET', hkey(id), 'ls')) }`),

  /**
   * A[1] id, [12] the attach generation this node holds ('' none known) →
   * { letters, 1, generation } | { letters, 0 } (gone, or attached since by another node: a takeover).
   */
  detach: op(`
local id = A[1]
if not live(id) then return { LETTERS, 0 } end
if A[2] ~= '' and redis.call('HGET', hkey(id), 'ag') ~= A[2] then return { LETTERS, 0 } end
detach_one(id)
return { LETTERS, 1, redis.call('HGET', hkey(id), 'ag') or false }`),

  /**
   * A[1] id, [12] the attach generation when this node detached it ('' none known), [3] the detail ('' or absent:
   * the resume window's) → { letters, 1|0 }: a detached session ends now (expired), unless it was attached since
   * (by any node: its window restarted).
   */
  expire: op(`
local id = A[1]
local f = redis.call('HMGET', hkey(id), 'st', 'ag')
if f[1] ~= 'd' then return { LETTERS, 0 } end
if A[2] ~= '' and f[2] ~= A[2] then return { LETTERS, 0 } end
end_session(id, 'expired', (A[3] and A[3] ~= '') and A[3] or expired_detail())
return { LETTERS, 1 }`),

  /** A[1] id, [12] detail → { letters, 1|0 } */
  end: op(`
local id = A[1]
if redis.call('EXISTS', hkey(id)) == 0 then return { LETTERS, 0 } end
end_session(id, 'ended', A[2])
return { LETTERS, 1 }`),

  /**
   * A[1] batch size → { letters, expired, more }. One batch per call, so
   * that no call holds Redis long: sessions whose node stopped renewing their
   * lease count as detached from now; overdue detached sessions expire (the
   * oldest detach first); tombstones past their window go. Index entries whose
   * keys Redis already expired (no node swept for a whole extra window) are
   * dropped, and the counters recounted from the live sessions.
   */
  sweep: op(`
local batch = tonumber(A[1])
local expired, stale, more = 0, false, 0
local lapsed = redis.call('ZRANGEBYSCORE', LEASES, '-inf', RNOW, 'LIMIT', 0, batch)
for _, id in ipairs(lapsed) do
  if redis.call('EXISTS', hkey(id)) == 0 then redis.call('ZREM', LEASES, id); stale = true else detach_one(id) end
end
if #lapsed == batch then more = 1 end
local oldest = redis.call('ZRANGE', DET, 0, batch - 1)
for _, id in ipairs(oldest) do
  local da = redis.call('HGET', hkey(id), 'da')
  if not da then
    redis.call('ZREM', DET, id); stale = true
  elseif NOW - tonumber(da) >= WINDOW then
    end_session(id, 'expired', expired_detail()); expired = expired + 1
  else
    oldest = nil
    break
  end
end
if oldest and #oldest == batch then more = 1 end
-- Tombstones past their window, the oldest first: stop at the first still inside it.
local tombs = 0
for _, id in ipairs(redis.call('ZRANGE', TOMBS, 0, batch - 1)) do
  local t = redis.call('HGET', TOMB, id)
  if t and split_tomb(t) > NOW then break end
  redis.call('HDEL', TOMB, id)
  tombs = tombs + 1
end
if tombs > 0 then redis.call('ZREMRANGEBYRANK', TOMBS, 0, tombs - 1) end
if tombs == batch then more = 1 end
if stale then
  local n, b = 0, 0
  for _, zset in ipairs({ LEASES, DET }) do
    for _, id in ipairs(redis.call('ZRANGE', zset, 0, -1)) do
      local f = redis.call('HMGET', hkey(id), 'ls', 'as', 'cb', 'ab')
      if f[1] then n = n + tonumber(f[1]) - tonumber(f[2]); b = b + tonumber(f[3]) - tonumber(f[4]) end
    end
  end
  redis.call('SET', MSGS, S(n))
  redis.call('SET', BYTES, S(b))
end
return { LETTERS, expired, more }`),

  /**
   * A[1] candidate epoch, then pairs: A[2] id this node holds attached, A[3] the attach generation it holds, … →
   * { letters, ids no longer attached, epoch, ids attached by another node since }: the others' leases (and key
   * TTLs) start again, and this node's own key. The epoch tells every node, within a renewal, that Redis lost its
   * data (a FLUSHALL leaves its connections open: nothing else would). A session whose generation moved on was
   * resumed elsewhere while its connection here stayed open (a takeover across nodes): its lease is the other
   * node's to renew (renewed here, it would never lapse should that node die), and this node is told, so that it
   * terminates that connection as a takeover on one node does. Before, the generation was not compared: the
   * connection stayed open until its heartbeat failed (never, for a peer that still answers pings).
   */
  renew: op(`
redis.call('SET', P .. 'node:' .. NODE, '1', 'PX', LEASE)
local lost, moved = {}, {}
for i = 2, #A, 2 do
  local id, gen = A[i], A[i + 1]
  if not redis.call('ZSCORE', LEASES, id) then
    table.insert(lost, id)
  elseif gen ~= '' and redis.call('HGET', hkey(id), 'ag') ~= gen then
    table.insert(moved, id)
  else
    redis.call('ZADD', LEASES, RNOW + LEASE, id)
    touch(id)
  end
end
return { LETTERS, lost, ensure_epoch(A[1]), moved }`),

  /**
   * A[1] data, [2] binary, [3] max seqs per reply, then pairs: [4] id, [5] generation, … →
   * one append's reply per session, in order (each with its own letters): a broadcast's message once, not once per session.
   */
  appendN: op(`
local res = {}
for k = 4, #A, 2 do
  LETTERS = {}
  res[#res + 1] = OPS['append']({ A[k], A[1], A[2], A[k + 1], '', A[3] })
end
return res`),

  /**
   * A broadcast (A[1] 'all') or a publish (A[1] 'm:<topic>'), [12] data, [13] binary, [14] the fan-out's id
   * ('' none: in the job and every notification of it), its fence ([15] session, [16] the attach generation this
   * node held, [17] cseq: the request whose handler made it; '' none) → { letters, pending
   * 1|0, sessions appended by this call } | { letters, 0, 0, why refused } (fan_fenced): appended to every member
   * session's stream, each under its next
   * seq, whatever node holds it or none (fan_run). Unfinished fan-outs come first (fan_queue): one that
   * does not fit this call's budget is queued and finished by later calls (fanWork), in order.
   */
  fanout: op(`
FAN_DONE = 0
FAN_ERR = nil
if (A[5] or '') ~= '' then
  local refused = fan_fenced(A[5], A[6], A[7])
  if refused then return { LETTERS, 0, 0, refused } end
end
local key = P .. A[1]
local max = tonumber(redis.call('GET', MSEQ) or '0')
local cursor, done = 0, false
if not fan_queue() and not FAN_ERR then cursor, done = fan_run(key, 0, max, A[2], A[3], fan_id(A[4] or '')) end
if done then return { LETTERS, 0, FAN_DONE } end
-- Refused before it appended anything: it fails whole (appended to none; the node reports it).
fan_raise_if_idle()
local jid = S(redis.call('INCR', P .. 'fseq'))
redis.call('HSET', P .. 'fj:' .. jid, 'k', key, 'c', S(cursor), 'x', S(max), 'd', A[2], 'b', A[3], 'i', A[4] or '')
redis.call('PEXPIRE', P .. 'fj:' .. jid, KEY_TTL)
redis.call('RPUSH', FQ, jid)
return { LETTERS, 1, FAN_DONE }`),

  /** → { letters, pending 1|0, sessions appended by this call }: the queued fan-outs, oldest first, within this call's budget. */
  fanWork: op(`
FAN_DONE = 0
FAN_ERR = nil
local pending = fan_queue()
fan_raise_if_idle()
return { LETTERS, pending and 1 or 0, FAN_DONE }`),

  /** → { letters, sessions, detached, messages, bytes, tombstones } */
  stats: op(`
local det = redis.call('ZCARD', DET)
return { LETTERS, redis.call('ZCARD', LEASES) + det, det, tonumber(redis.call('GET', MSGS) or '0'), tonumber(redis.call('GET', BYTES) or '0'), redis.call('ZCARD', TOMBS) }`),
} as const;

export type SessionOpName = keyof typeof SESSION_OPS;

/**
 * The one script the store runs: ARGV[1…10] the common values, [11] the node's id, then any
 * number of operations, each `name, argc, arg1 … argN`, run in order, each
 * in its own `pcall` (an error fails that operation alone; what it wrote
 * before the error stays, as it would in a script of its own). Returns one
 * reply per operation: `{ letters, … }`, or `{ message }` (a string first:
 * the operation failed with that error). One call, one round trip and one
 * script invocation for a whole batch: how a broadcast to 10,000 detached
 * sessions, or a reconnect storm's resumes, costs Redis tens of calls instead
 * of tens of thousands (docs/scaling.md, "The session store").
 */
export const SESSION_BATCH_SCRIPT = `${PRELUDE}
local OPS = {}
${FANOUT_LIB}
${Object.entries(SESSION_OPS)
  .map(([name, body]) => `OPS['${name}'] = function(A)\n${body}\nend`)
  .join('\n')}
local out = {}
local i = 12
local n = #ARGV
while i <= n do
  local fn = OPS[ARGV[i]]
  local argc = tonumber(ARGV[i + 1])
  local A = {}
  for j = 1, argc do A[j] = ARGV[i + 1 + j] end
  LETTERS = {}
  local ok, r
  if fn then ok, r = pcall(fn, A) else ok, r = false, 'unknown session store operation ' .. tostring(ARGV[i]) end
  if ok then
    out[#out + 1] = r
  else
    if type(r) == 'table' then r = r.err or r.ok or 'error' end
    out[#out + 1] = { tostring(r) }
  end
  i = i + 2 + argc
end
return out
`;
