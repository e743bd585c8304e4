"""Waiting for a result in Redis: one round trip, then a blocking pop.

A waiter registers itself and blocks in the same round trip. It sends, pipelined
on one connection taken from the client's pool,

1. ``EVAL`` of :data:`WAIT_LUA`: if the result is ready, push its whole meta onto
   the waiter's *inbox* (a list only this wait uses); if not, add the inbox to the
   task's *waiters* set ``tasks_q:waiters:<id>``;
2. ``BLPOP inbox <seconds>``.

Every result write (:data:`NOTIFY_LUA`, inside the store's write script) pushes
the new meta onto the inbox of every registered waiter and, once the state is
ready, deletes the waiters set. Both scripts are atomic, so a write lands either
before the registration (the ``EVAL`` pushes it) or after it (the write pushes it):
never in between. The inbox is a list, so a push that comes before the ``BLPOP``
is not lost, unlike a pub/sub message sent before ``SUBSCRIBE``.

An entry in the waiters set is ``'r'`` (ready states only) or ``'a'`` (every
state: ``on_message``) followed by the inbox key. Waiters re-register every
:data:`RECHECK` seconds of quiet, and their entries expire after
:data:`WAITER_TTL_MS`; an inbox nobody pops expires after :data:`INBOX_TTL_MS`.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .. import states
from .base import notify_if_changed, wait_budget

#: re-register (and so re-read) after this many seconds without a push
RECHECK = 2.0
#: a waiter's entry outlives its last registration by this long (several RECHECKs)
WAITER_TTL_MS = 30_000
#: an inbox nobody pops (its waiter gave up) disappears after this long
INBOX_TTL_MS = 60_000
#: extra seconds to wait for BLPOP's own "nothing came" reply before calling Redis stuck
REPLY_GRACE = 5.0

_READY = " or ".join(f"cur == '{s}'" for s in sorted(states.READY_STATES))

#: Lua lines that end a write script: push the meta of the result hash KEYS[1] to
#: the waiters registered in KEYS[2]. Expects ``ready`` (a boolean) in scope.
NOTIFY_LUA = f"""
local waiters = redis.call('SMEMBERS', KEYS[2])
if #waiters > 0 then
  local meta = cjson.encode(redis.call('HGETALL', KEYS[1]))
  for _, entry in ipairs(waiters) do
    if ready or string.sub(entry, 1, 1) == 'a' then
      local inbox = string.sub(entry, 2)
      redis.call('RPUSH', inbox, meta)
      redis.call('PEXPIRE', inbox, {INBOX_TTL_MS})
    end
  end
  if ready then redis.call('DEL', KEYS[2]) end
end
"""

# KEYS: result hash, waiters set, inbox. ARGV: the waiter's entry ('r' or 'a' + inbox key).
# Returns the current state ('' when none is stored).
WAIT_LUA = f"""
local cur = redis.call('HGET', KEYS[1], 'status')
local ready = cur and ({_READY})
if ready or string.sub(ARGV[1], 1, 1) == 'a' then
  local meta = cjson.encode(redis.call('HGETALL', KEYS[1]))
  if redis.call('LINDEX', KEYS[3], -1) ~= meta then  -- a write may have pushed it already
    redis.call('RPUSH', KEYS[3], meta)
    redis.call('PEXPIRE', KEYS[3], {INBOX_TTL_MS})
  end
end
if ready then
  redis.call('SREM', KEYS[2], ARGV[1])
else
  redis.call('SADD', KEYS[2], ARGV[1])
  redis.call('PEXPIRE', KEYS[2], {WAITER_TTL_MS})
end
return cur or ''
"""


def pairs_to_hash(payload: Any) -> dict[Any, Any]:
    """The field -> value dict of a pushed meta (``cjson.encode`` of HGETALL's flat list)."""
    flat = json.loads(payload)
    if not flat:  # an empty hash: cjson encodes an empty table as {}
        return {}
    return dict(zip(flat[0::2], flat[1::2], strict=True))


def wait_on_inbox(
    client: Any,
    task_id: str,
    keys: tuple[str, str],
    inbox_prefix: str,
    decode: Callable[[str, dict], dict[str, Any]],
    timeout: float | None,
    on_message: Callable[[dict[str, Any]], None] | None,
) -> dict[str, Any]:
    """Block until ``task_id`` is ready; return its meta (see the module docstring).

    ``keys`` are the result hash and the waiters set. ``decode(task_id, hash)`` turns
    a field -> value dict into a meta. TimeoutError after ``timeout`` seconds.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    inbox = f"{inbox_prefix}{secrets.token_hex(12)}"
    entry = ("a" if on_message is not None else "r") + inbox
    register = ("EVAL", WAIT_LUA, 3, *keys, inbox, entry)
    seen = None
    meta = decode(task_id, {})
    with pooled_connection(client) as conn:
        registered = False
        while True:
            remaining = wait_budget(deadline, task_id, timeout, meta)
            seconds = RECHECK if remaining is None else max(0.001, min(RECHECK, remaining))
            blpop = ("BLPOP", inbox, f"{seconds:.3f}")
            state, reply = _round(conn, register, blpop, registered, seconds)
            if state:  # for the TimeoutError message
                meta["status"] = state.decode() if isinstance(state, bytes) else state
            if reply is None:  # quiet for a while: register (and so read) again
                registered = False
                continue
            registered = True
            meta = decode(task_id, pairs_to_hash(reply[1]))
            if on_message is not None:
                seen = notify_if_changed(meta, seen, on_message)
            if meta["status"] in states.READY_STATES:
                return meta


def _round(
    conn: Any, register: tuple[Any, ...], blpop: tuple[Any, ...], registered: bool, seconds: float
) -> tuple[Any, Any]:
    """Send ``register`` (unless ``registered``) and ``blpop``.

    Returns the registration's reply (the state; None when not sent) and BLPOP's
    (None when nothing came within ``seconds``). On a broken connection, once more
    on a fresh one, registering again (the server may have restarted). Any failure
    mid-round closes the connection: a reply may still be on its way, and the pool
    must not hand it to the next user.
    """

    def once(commands: list[tuple[Any, ...]]) -> tuple[Any, Any]:
        conn.send_packed_command(conn.pack_commands(commands))
        state = conn.read_response() if len(commands) > 1 else None
        if not conn.can_read(timeout=seconds + REPLY_GRACE):
            raise RedisTimeoutError(
                f"Redis did not answer BLPOP within {seconds + REPLY_GRACE:.1f}s"
            )
        return state, conn.read_response()

    try:
        try:
            return once([blpop] if registered else [register, blpop])
        except (RedisConnectionError, RedisTimeoutError):
            conn.disconnect()
            return once([register, blpop])
    except BaseException:
        conn.disconnect()
        raise


def run_scripts(client: Any, source: str, numkeys: int, calls: list[tuple[Any, ...]]) -> None:
    """``EVALSHA`` ``source`` once per call (keys then args), pipelined in one round trip.

    Loads the script when Redis does not know it and retries once on a broken
    connection: the callers' scripts are idempotent. redis-py's own pipeline would
    ask ``SCRIPT EXISTS`` first, a round trip more every time.
    """
    sha = _sha(source)
    todo = list(calls)
    with pooled_connection(client) as conn:
        for attempt in range(3):
            commands = [("EVALSHA", sha, numkeys, *call) for call in todo]
            try:
                conn.send_packed_command(conn.pack_commands(commands))
                errors = []
                for call in todo:
                    try:
                        conn.read_response()
                    except ResponseError as exc:  # the whole reply was read: carry on
                        errors.append((call, exc))
            except (RedisConnectionError, RedisTimeoutError):
                conn.disconnect()
                if attempt:
                    raise
                continue
            except BaseException:
                conn.disconnect()
                raise
            missing = [call for call, exc in errors if isinstance(exc, NoScriptError)]
            if len(missing) < len(errors):
                raise next(exc for _, exc in errors if not isinstance(exc, NoScriptError))
            if not missing:
                return
            conn.send_command("SCRIPT", "LOAD", source)
            conn.read_response()
            todo = missing
    raise RuntimeError("Redis kept forgetting the result script")


_shas: dict[str, str] = {}


def _sha(source: str) -> str:
    sha = _shas.get(source)
    if sha is None:
        sha = _shas[source] = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()
    return sha


@contextmanager
def pooled_connection(client: Any) -> Iterator[Any]:
    """A connection of ``client``'s pool, for speaking to it directly.

    redis-py's command path costs ~75 us of CPU per call here; a pipelined write and
    the reads on a connection cost a fraction of that.
    """
    pool = client.connection_pool
    try:
        conn = pool.get_connection()
    except TypeError:  # redis-py < 5.3 wants a command name
        conn = pool.get_connection("EVAL")
    try:
        yield conn
    finally:
        pool.release(conn)
