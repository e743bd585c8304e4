"""The Lua scripts that make claims, restores and the delayed store atomic.

Every script touches only one Redis server (no cluster support) and may write
keys named in its arguments: the list and wake keys of a message travel with it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from redis.exceptions import NoScriptError

#: Claim up to ARGV[3] ready messages into the owner's in-flight hash, in order of
#: KEYS[6..5+n] (highest priority band first), after applying acks and moving due
#: delayed messages to the head of their queues.  Tags are ARGV[4], ARGV[4]+1, ...
#: When nothing is claimed, also return the last id of each wake stream (the rest
#: of KEYS) so the caller can block on them without missing a later push.
#:
#: KEYS: in-flight hash, owners set, heartbeat, delayed zset, delayed messages hash,
#:       n ready lists, wake streams
#: ARGV: owner, heartbeat ttl (ms), limit, first tag, n lists, move limit, n acks, acks...
#: Returns {{list index, payload, ...}, {wake ids}, next ETA or '', server time}
CLAIM = """
local inflight, owners, heartbeat, delayed, delayed_messages = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local owner, ttl, limit, seq = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local nlists, move_limit, nacks = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])

local first_ack, last_ack = 8, 7 + nacks
while first_ack <= last_ack do
  local upto = math.min(first_ack + 499, last_ack)
  redis.call('HDEL', inflight, unpack(ARGV, first_ack, upto))
  first_ack = upto + 1
end

redis.call('SET', heartbeat, owner, 'PX', ttl)
redis.call('SADD', owners, owner)

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
        redis.call('XADD', string.sub(entry, a + 1, b - 1), 'MAXLEN', '1', '*', 'w', '1')
      else
        redis.call('LPUSH', 'tasks_q:undecodable:delayed', entry)
      end
    end
  end
end

local out, got = {}, 0
for k = 1, nlists do
  if got >= limit then break end
  local key = KEYS[5 + k]
  local items = redis.call('RPOP', key, limit - got)
  if items then
    local fields = {}
    for _, item in ipairs(items) do
      fields[#fields + 1] = string.format('%d', seq + got)
      fields[#fields + 1] = key .. '\\n' .. item
      out[#out + 1] = k
      out[#out + 1] = item
      got = got + 1
    end
    redis.call('HSET', inflight, unpack(fields))
  end
end

local wakes = {}
if got == 0 then
  for k = 6 + nlists, #KEYS do
    local last = redis.call('XREVRANGE', KEYS[k], '+', '-', 'COUNT', 1)
    wakes[#wakes + 1] = last[1] and last[1][1] or '0-0'
  end
end
local first = redis.call('ZRANGE', delayed, 0, 0, 'WITHSCORES')
return {out, wakes, first[2] or '', string.format('%.6f', now)}
"""

#: Publish: push onto the tail of a ready list; when the list was empty, append
#: to the queue's wake stream so blocked consumers claim at once.
#: KEYS: ready list, wake stream.  ARGV: payload.
PUBLISH = """
if redis.call('LPUSH', KEYS[1], ARGV[1]) == 1 then
  redis.call('XADD', KEYS[2], 'MAXLEN', '1', '*', 'w', '1')
end
"""

#: Put in-flight messages back at the head of their lists, each only if it is
#: still in flight (so a concurrent ack or a second sweep never duplicates it).
#:
#: KEYS: in-flight hash, the owner's heartbeat, owners set
#: ARGV: mode, owner, then groups of (tag, list key, wake key or '', payload)
#:   mode 'own': the owner gives messages back; 'sweep': the owner is dead
#:   (abort with -1 if its heartbeat is back, forget it once empty); 'release':
#:   the owner is closing (forget it and its heartbeat once empty).
#: Returns how many messages were moved.
RESTORE = """
local mode = ARGV[1]
if mode == 'sweep' and redis.call('EXISTS', KEYS[2]) == 1 then return -1 end
local moved = 0
for i = 3, #ARGV, 4 do
  if redis.call('HDEL', KEYS[1], ARGV[i]) == 1 then
    redis.call('RPUSH', ARGV[i + 1], ARGV[i + 3])
    if ARGV[i + 2] ~= '' then
      redis.call('XADD', ARGV[i + 2], 'MAXLEN', '1', '*', 'w', '1')
    end
    moved = moved + 1
  end
end
if mode ~= 'own' and redis.call('HLEN', KEYS[1]) == 0 then
  redis.call('SREM', KEYS[3], ARGV[2])
  if mode == 'release' then redis.call('DEL', KEYS[2]) end
end
return moved
"""

#: Add a message to the delayed store once per member (task id and ETA); when
#: ARGV[4] names an in-flight tag, move it from KEYS[4] (only if still there).
#:
#: KEYS: delayed zset, delayed messages hash, wake stream, in-flight hash
#: ARGV: member, ETA (unix seconds), entry, in-flight tag or ''
#: Returns 1 if stored, 0 if the member was already there, -1 if the tag was gone.
SCHEDULE = """
if ARGV[4] ~= '' and redis.call('HDEL', KEYS[4], ARGV[4]) == 0 then return -1 end
if redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[3]) == 0 then return 0 end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('XADD', KEYS[3], 'MAXLEN', '1', '*', 'w', '1')
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
