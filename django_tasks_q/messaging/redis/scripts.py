"""The Lua scripts that make claims, restores and the delayed store atomic.

Every script touches only one Redis server (no cluster support).  Scripts write
the keys named in their arguments (the list and idle-list keys of a message travel
with it) and, for the waiting consumers, keys derived from an owner id that an
waiting list holds: its heartbeat, in-flight hash, inbox and idle registry.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from redis.exceptions import NoScriptError

#: Lua helpers shared by the scripts (each script's source starts with them).
#:
#: Waiting consumers: a consumer with nothing to do registers its owner id in the
#: waiting list of each queue it consumes (``tasks_q:waiting:<queue>``), then blocks on
#: its own inbox (``tasks_q:inbox:<owner>``).  A publish hands the message to one
#: idle owner (into its in-flight hash, and the inbox), so the consumer gets it in
#: the reply it was waiting for: one hop, one consumer woken.  Anything else that
#: makes a message ready (a delayed message coming due, a restore) pokes one idle
#: owner with an empty inbox item, and that consumer claims.
#:
#: The owner that started waiting last is taken first (its caches are warm; the others
#: stay asleep).  Owners come off every waiting list when they are handed or poked (the lists they
#: are on are kept in ``tasks_q:idlereg:<owner>``).  An owner without a heartbeat is
#: skipped and dropped.  Keys derived from an owner id are built here, not passed
#: in: the transport runs on one Redis server (no cluster), see the module doc.
LUA_HELPERS = """
local function tq_unregister(owner)
  local reg = 'tasks_q:idlereg:' .. owner
  local lists = redis.call('SMEMBERS', reg)
  for _, list in ipairs(lists) do redis.call('LREM', list, 0, owner) end
  redis.call('DEL', reg)
end

local function tq_idle_owner(waiting)
  while true do
    local owner = redis.call('LPOP', waiting)
    if not owner then return nil end
    local alive = redis.call('EXISTS', 'tasks_q:owner:' .. owner) == 1
    tq_unregister(owner)
    if alive then return owner end
  end
end

local function tq_poke(waiting)
  local owner = tq_idle_owner(waiting)
  if owner then redis.call('LPUSH', 'tasks_q:inbox:' .. owner, '') end
end

local function tq_hand(waiting, list, payload)
  local owner = tq_idle_owner(waiting)
  if not owner then return false end
  local tag = 'h' .. redis.call('INCR', 'tasks_q:handseq')
  redis.call('HSET', 'tasks_q:inflight:' .. owner, tag, list .. '\\n' .. payload)
  redis.call('LPUSH', 'tasks_q:inbox:' .. owner, tag .. '\\n' .. list .. '\\n' .. payload)
  return true
end
"""

#: Claim up to ARGV[3] messages for the owner: first what was handed to its inbox
#: (still in its in-flight hash), then ready messages moved into the in-flight hash
#: in order of KEYS[7..6+n] (highest priority band first), after applying acks and
#: moving due delayed messages to the head of their queues.  Claimed tags are
#: ARGV[4], ARGV[4]+1, ...; handed ones keep theirs ('h<n>').  The owner first
#: leaves the waiting lists; with nothing claimed and ARGV[9] = '1' it joins the idle
#: list of each queue (the rest of KEYS) before returning, so a later publish is
#: handed to it.
#:
#: KEYS: in-flight hash, owners set, heartbeat, delayed zset, delayed messages hash,
#:       inbox, n ready lists, waiting lists (one per queue)
#: ARGV: owner, heartbeat ttl (ms), limit, first tag, n lists, move limit, n acks,
#:       idle registry key, register ('1'/'0'), acks...
#: Returns {{tag, list key, payload, ...}, next ETA or '', server time}
CLAIM = LUA_HELPERS + """
local inflight, owners, heartbeat, delayed, delayed_messages, inbox =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local owner, ttl, limit, seq = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local nlists, move_limit, nacks = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local register = ARGV[9] == '1'

local first_ack, last_ack = 10, 9 + nacks
while first_ack <= last_ack do
  local upto = math.min(first_ack + 499, last_ack)
  redis.call('HDEL', inflight, unpack(ARGV, first_ack, upto))
  first_ack = upto + 1
end

redis.call('SET', heartbeat, owner, 'PX', ttl)
redis.call('SADD', owners, owner)
tq_unregister(owner)

local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
if move_limit > 0 then
  local due = redis.call('ZRANGEBYSCORE', delayed, '-inf', now, 'LIMIT', 0, move_limit)
  for d = #due, 1, -1 do
    local member = due[d]
    local entry = redis.call('HGET', delayed_messages, member)
    redis.call('ZREM', delayed, member)
    redis.call('HDEL', delayed_messages, member)
    if entry then
      local a = string.find(entry, '\\n', 1, true)
      local b = a and string.find(entry, '\\n', a + 1, true)
      if b then
        redis.call('RPUSH', string.sub(entry, 1, a - 1), string.sub(entry, b + 1))
        tq_poke(string.sub(entry, a + 1, b - 1))
      else
        redis.call('LPUSH', 'tasks_q:undecodable:delayed', entry)
      end
    end
  end
end

local out, got = {}, 0
local handed = redis.call('LRANGE', inbox, 0, -1)
redis.call('DEL', inbox)
for h = #handed, 1, -1 do
  local item = handed[h]
  local a = string.find(item, '\\n', 1, true)
  if a then
    local tag = string.sub(item, 1, a - 1)
    local value = redis.call('HGET', inflight, tag)
    if value then
      local b = string.find(value, '\\n', 1, true)
      out[#out + 1] = tag
      out[#out + 1] = string.sub(value, 1, b - 1)
      out[#out + 1] = string.sub(value, b + 1)
      got = got + 1
    end
  end
end

for k = 1, nlists do
  if got >= limit then break end
  local key = KEYS[6 + k]
  local items = redis.call('RPOP', key, limit - got)
  if items then
    local fields = {}
    for _, item in ipairs(items) do
      local tag = string.format('%d', seq + got)
      fields[#fields + 1] = tag
      fields[#fields + 1] = key .. '\\n' .. item
      out[#out + 1] = tag
      out[#out + 1] = key
      out[#out + 1] = item
      got = got + 1
    end
    redis.call('HSET', inflight, unpack(fields))
  end
end

if got == 0 and register then
  local reg = ARGV[8]
  for k = 7 + nlists, #KEYS do
    redis.call('LPUSH', KEYS[k], owner)
    redis.call('SADD', reg, KEYS[k])
  end
end
local first = redis.call('ZRANGE', delayed, 0, 0, 'WITHSCORES')
return {out, first[2] or '', string.format('%.6f', now)}
"""

#: Publish: hand the message to a consumer waiting on the queue, else push it onto
#: the tail of its ready list.  KEYS: ready list, waiting list.  ARGV: payload.
#: Returns 1 if handed to a waiting consumer, 0 if queued.
PUBLISH = LUA_HELPERS + """
if tq_hand(KEYS[2], KEYS[1], ARGV[1]) then return 1 end
redis.call('LPUSH', KEYS[1], ARGV[1])
return 0
"""

#: Put in-flight messages back at the head of their lists, each only if it is
#: still in flight (so a concurrent ack or a second sweep never duplicates it).
#:
#: KEYS: in-flight hash, the owner's heartbeat, owners set
#: ARGV: mode, owner, then groups of (tag, list key, waiting list key or '', payload)
#:   mode 'own': the owner gives messages back; 'sweep': the owner is dead
#:   (abort with -1 if its heartbeat is back, forget it once empty); 'release':
#:   the owner is closing (forget it and its heartbeat once empty).  'sweep' and
#:   'release' also take the owner off the waiting lists and drop its inbox.
#: Returns how many messages were moved.
RESTORE = LUA_HELPERS + """
local mode, owner = ARGV[1], ARGV[2]
if mode == 'sweep' and redis.call('EXISTS', KEYS[2]) == 1 then return -1 end
if mode ~= 'own' then
  tq_unregister(owner)
  redis.call('DEL', 'tasks_q:inbox:' .. owner)
end
local moved = 0
for i = 3, #ARGV, 4 do
  if redis.call('HDEL', KEYS[1], ARGV[i]) == 1 then
    redis.call('RPUSH', ARGV[i + 1], ARGV[i + 3])
    if ARGV[i + 2] ~= '' then tq_poke(ARGV[i + 2]) end
    moved = moved + 1
  end
end
if mode ~= 'own' and redis.call('HLEN', KEYS[1]) == 0 then
  redis.call('SREM', KEYS[3], owner)
  if mode == 'release' then redis.call('DEL', KEYS[2]) end
end
return moved
"""

#: Add a message to the delayed store once per member (task id and ETA); when
#: ARGV[4] names an in-flight tag, move it from KEYS[4] (only if still there).
#: A waiting consumer is poked so it blocks again with the new earliest ETA.
#:
#: KEYS: delayed zset, delayed messages hash, waiting list, in-flight hash
#: ARGV: member, ETA (unix seconds), entry, in-flight tag or ''
#: Returns 1 if stored, 0 if the member was already there, -1 if the tag was gone.
SCHEDULE = LUA_HELPERS + """
if ARGV[4] ~= '' and redis.call('HDEL', KEYS[4], ARGV[4]) == 0 then return -1 end
if redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[3]) == 0 then return 0 end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
tq_poke(KEYS[3])
return 1
"""

#: Remove delayed members (revoke).  KEYS: delayed zset, delayed messages hash.
UNSCHEDULE = """
local removed = 0
for i = 1, #ARGV do
  if redis.call('ZREM', KEYS[1], ARGV[i]) == 1 then
    redis.call('HDEL', KEYS[2], ARGV[i])
    removed = removed + 1
  end
end
return removed
"""


class Script:
    """A Lua script run by SHA, loaded again when the server has forgotten it."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    def __call__(self, client: Any, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        try:
            return client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            client.script_load(self.source)
            return client.evalsha(self.sha, len(keys), *keys, *args)

    def add_to_batch(self, batch: Any, keys: Sequence[Any], args: Sequence[Any]) -> None:
        """Add a call to a kombu publish batch (by source: it cannot recover from NOSCRIPT)."""
        batch.add("eval", self.source, len(keys), *keys, *args)


publish = Script(PUBLISH)
claim = Script(CLAIM)
restore = Script(RESTORE)
schedule = Script(SCHEDULE)
unschedule = Script(UNSCHEDULE)
