"""Result stores over Redis: ``cache://<alias>`` (a django-redis cache) and ``redis://``.

A task's result is a hash at ``tasks_q:result:<id>`` (one JSON value per meta field,
``status`` as plain text) with a TTL of ``RESULT_EXPIRES``. Writes are one Lua call
that applies the write rules of :mod:`.base` (no ready-state downgrade; coalesce
fields only set when known) and ``PUBLISH``-es the new state on the channel
``tasks_q:result:<id>``; ``store_many`` pipelines those calls. ``wait_for``
subscribes, then reads, then blocks on the channel, so it wakes the moment the
result lands and cannot miss it.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from .. import states
from ..conf import settings
from ..exceptions import TimeoutError
from ..messaging.connection import mask_url
from .base import (
    COALESCE_FIELDS,
    OVERWRITE_FIELDS,
    ChordReady,
    ResultStore,
    empty_meta,
    missing_chord,
    notify_if_changed,
    wait_budget,
)
from .codec import dumps, loads

PREFIX = "tasks_q:"
#: while blocked on the channel, re-read the key this often anyway (lost messages)
RECHECK = 2.0

_READY_LUA = " or ".join(f"cur == '{s}'" for s in sorted(states.READY_STATES))

# KEYS[1] result key; ARGV: status, is_ready ('1'/'0'), ttl seconds (0: none), field, value...
STORE_LUA = f"""
local cur = redis.call('HGET', KEYS[1], 'status')
if cur and ARGV[2] == '0' and ({_READY_LUA}) then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 4))
if tonumber(ARGV[3]) > 0 then redis.call('EXPIRE', KEYS[1], ARGV[3]) end
redis.call('PUBLISH', KEYS[1], ARGV[1])
return 1
"""

# KEYS[1] chord key, KEYS[2] set of counted members; ARGV[1] member id ('' for none).
# Returns nil (no counter), {-1} (member already counted), {remaining} or {0, body, ids}.
CHORD_PART_LUA = """
if redis.call('EXISTS', KEYS[1]) == 0 then return nil end
if ARGV[1] ~= '' then
  if redis.call('SADD', KEYS[2], ARGV[1]) == 0 then return {-1} end
  local ttl = redis.call('TTL', KEYS[1])
  if ttl > 0 then redis.call('EXPIRE', KEYS[2], ttl) end
end
local n = redis.call('HINCRBY', KEYS[1], 'remaining', -1)
if n == 0 then
  return {n, redis.call('HGET', KEYS[1], 'body'), redis.call('HGET', KEYS[1], 'result_ids')}
end
return {n}
"""


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


class RedisStore(ResultStore):
    """Results in Redis through a plain ``redis.Redis.from_url`` client, built per process."""

    native_wait = True

    def __init__(self, url: str) -> None:
        self.url = url
        if settings.RESULT_SERIALIZER != "json":
            raise ImproperlyConfigured(
                f"TASKS_Q['RESULT_SERIALIZER'] is {settings.RESULT_SERIALIZER!r}; the Redis "
                "result stores write JSON only. Set it to 'json'."
            )
        self._client_obj: Any = None
        self._pid: int | None = None
        self._scripts: dict[str, Any] = {}
        self._local = threading.local()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {mask_url(self.url)}>"

    # -- plumbing --------------------------------------------------------------------

    def _make_client(self) -> Any:
        import redis

        return redis.Redis.from_url(self.url)

    @property
    def client(self) -> Any:
        if self._client_obj is None or self._pid != os.getpid():
            with self._lock:
                if self._client_obj is None or self._pid != os.getpid():
                    self._client_obj = self._make_client()
                    self._pid = os.getpid()
                    self._scripts = {}
                    self._local = threading.local()
        return self._client_obj

    def _script(self, source: str) -> Any:
        script = self._scripts.get(source)
        if script is None:
            script = self._scripts[source] = self.client.register_script(source)
        return script

    @staticmethod
    def key(task_id: str) -> str:
        return f"{PREFIX}result:{task_id}"

    @staticmethod
    def _ttl(expires: Any = None) -> int:
        expiry = ResultStore.expiry(expires)
        return 0 if expiry is None else max(1, int(expiry.total_seconds()))

    # -- writes ----------------------------------------------------------------------

    def _args(self, record: dict[str, Any], ttl: int) -> list[Any]:
        ready = "1" if record["status"] in states.READY_STATES else "0"
        args: list[Any] = [record["status"], ready, ttl, "status", record["status"]]
        for key in OVERWRITE_FIELDS[1:]:
            args += [key, dumps(record[key])]
        for key in COALESCE_FIELDS:
            if record[key] is not None:
                args += [key, dumps(record[key])]
        return args

    def write_records(self, records: list[dict[str, Any]]) -> None:
        if not records:
            return
        ttl = self._ttl()
        script = self._script(STORE_LUA)
        if len(records) == 1:
            record = records[0]
            script(keys=[self.key(record["task_id"])], args=self._args(record, ttl))
            return
        pipe = self.client.pipeline(transaction=False)
        for record in records:
            script(keys=[self.key(record["task_id"])], args=self._args(record, ttl), client=pipe)
        pipe.execute()

    # -- reads -----------------------------------------------------------------------

    @staticmethod
    def _decode(task_id: str, raw: dict) -> dict[str, Any]:
        if not raw:
            return empty_meta(task_id)
        meta = empty_meta(task_id)
        for field, value in raw.items():
            field = _text(field)
            meta[field] = _text(value) if field == "status" else loads(value)
        meta["children"] = meta["children"] or []
        meta["retries"] = meta["retries"] or 0
        return meta

    def get_task_meta(self, task_id: str) -> dict[str, Any]:
        task_id = str(task_id)
        return self._decode(task_id, self.client.hgetall(self.key(task_id)))

    def get_many_meta(self, task_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        ids = [str(t) for t in task_ids]
        pipe = self.client.pipeline(transaction=False)
        for task_id in ids:
            pipe.hgetall(self.key(task_id))
        return {tid: self._decode(tid, raw) for tid, raw in zip(ids, pipe.execute(), strict=True)}

    def _pubsub(self) -> Any:
        client = self.client
        pubsub = getattr(self._local, "pubsub", None)
        if pubsub is None:
            pubsub = self._local.pubsub = client.pubsub(ignore_subscribe_messages=True)
        return pubsub

    def wait_for(
        self,
        task_id: str,
        timeout: float | None = None,
        interval: float = 0.5,
        on_message: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        task_id = str(task_id)
        meta = self.get_task_meta(task_id)
        if meta["status"] in states.READY_STATES:
            if on_message is not None:
                on_message(meta)
            return meta
        deadline = None if timeout is None else time.monotonic() + timeout
        channel = self.key(task_id)
        pubsub = self._pubsub()
        pubsub.subscribe(channel)
        try:
            return self._wait_subscribed(pubsub, task_id, timeout, deadline, on_message)
        except TimeoutError:
            raise
        except BaseException:
            # The connection may be mid-reply: start afresh next time.
            self._local.pubsub = None
            pubsub.close()
            raise
        finally:
            if getattr(self._local, "pubsub", None) is pubsub:
                pubsub.unsubscribe(channel)

    def _wait_subscribed(
        self,
        pubsub: Any,
        task_id: str,
        timeout: float | None,
        deadline: float | None,
        on_message: Callable[[dict[str, Any]], None] | None,
    ) -> dict[str, Any]:
        channel = self.key(task_id).encode("utf-8")
        seen = None
        read = True  # subscribed first, so this read cannot miss a later PUBLISH
        while True:
            if read:
                meta = self.get_task_meta(task_id)
                if on_message is not None:
                    seen = notify_if_changed(meta, seen, on_message)
                if meta["status"] in states.READY_STATES:
                    return meta
            remaining = wait_budget(deadline, task_id, timeout, meta)
            budget = RECHECK if remaining is None else min(RECHECK, remaining)
            message = pubsub.get_message(timeout=budget)
            if message is None:
                read = True  # a quiet spell: re-read in case a message was lost
                continue
            if message.get("type") != "message":
                read = False
                continue
            name = message.get("channel")
            if isinstance(name, str):
                name = name.encode("utf-8")
            state = _text(message.get("data"))
            read = name == channel and (state in states.READY_STATES or on_message is not None)

    def forget(self, task_id: str) -> None:
        self.client.delete(self.key(str(task_id)))

    # -- groups ----------------------------------------------------------------------

    def save_group(self, group_id: str, result_ids: list[str]) -> None:
        ttl = self._ttl()
        self.client.set(
            f"{PREFIX}group:{group_id}", dumps([str(i) for i in result_ids]), ex=ttl or None
        )

    def restore_group(self, group_id: str) -> list[str] | None:
        raw = self.client.get(f"{PREFIX}group:{group_id}")
        return None if raw is None else list(loads(raw))

    def delete_group(self, group_id: str) -> None:
        self.client.delete(f"{PREFIX}group:{group_id}")

    # -- chords ----------------------------------------------------------------------

    def chord_init(self, group_id: str, total: int, body: dict, result_ids: list[str]) -> None:
        key = f"{PREFIX}chord:{group_id}"
        pipe = self.client.pipeline(transaction=True)
        pipe.delete(key, f"{key}:counted")
        pipe.hset(
            key,
            mapping={
                "remaining": int(total),
                "total": int(total),
                "body": dumps(body),
                "result_ids": dumps([str(i) for i in result_ids]),
            },
        )
        ttl = self._ttl()
        if ttl:
            pipe.expire(key, ttl)
        pipe.execute()

    def chord_part_done(self, group_id: str, member_id: str | None = None) -> ChordReady | None:
        key = f"{PREFIX}chord:{group_id}"
        reply = self._script(CHORD_PART_LUA)(
            keys=[key, f"{key}:counted"], args=["" if member_id is None else str(member_id)]
        )
        if reply is None:
            return missing_chord(group_id)
        if int(reply[0]) != 0:
            return None
        return ChordReady(group_id=group_id, body=loads(reply[1]), result_ids=loads(reply[2]))

    def cleanup(self, expires: timedelta | None = None, chunk_size: int = 1000) -> int:
        """Nothing to do: every key carries a TTL of RESULT_EXPIRES."""
        return 0


class CacheStore(RedisStore):
    """Results in the Redis behind a django-redis cache alias: ``cache://<alias>``."""

    def __init__(self, url: str) -> None:
        alias = url.split("://", 1)[1].strip("/") or "default"
        super().__init__(url)
        self.alias = alias
        self._check_alias()

    def _check_alias(self) -> None:
        from django.conf import settings as django_settings

        caches = getattr(django_settings, "CACHES", {}) or {}
        fix = (
            f"Add CACHES[{self.alias!r}] with BACKEND 'django_redis.cache.RedisCache', or "
            "set TASKS_Q['RESULT_BACKEND'] to 'redis://host:6379/0'."
        )
        if self.alias not in caches:
            raise ImproperlyConfigured(
                f"TASKS_Q['RESULT_BACKEND'] is {self.url!r}, but CACHES has no alias "
                f"{self.alias!r} (aliases: {', '.join(sorted(caches)) or 'none'}). {fix}"
            )
        backend = str(caches[self.alias].get("BACKEND", ""))
        if not backend.startswith("django_redis."):
            raise ImproperlyConfigured(
                f"TASKS_Q['RESULT_BACKEND'] is {self.url!r}, but CACHES[{self.alias!r}] uses "
                f"{backend!r}, not a django-redis cache. {fix}"
            )

    def _make_client(self) -> Any:
        from django_redis import get_redis_connection

        try:
            return get_redis_connection(self.alias)
        except NotImplementedError:
            raise ImproperlyConfigured(
                f"CACHES[{self.alias!r}] does not expose a raw Redis client (sharded "
                "django-redis clients do not); use DefaultClient or a redis:// result backend."
            ) from None

    def __repr__(self) -> str:
        return f"<CacheStore cache://{self.alias}>"
