"""Result stores over Redis: ``cache://<alias>`` (a django-redis cache) and ``redis://``.

A task's result is a hash at ``tasks_q:result:<id>`` (one JSON value per meta field,
``status`` as plain text) with a TTL of ``RESULT_EXPIRES``. Writes are one Lua call
that applies the write rules of :mod:`.base` (no ready-state downgrade; coalesce
fields only set when known) and pushes the new meta to the clients waiting on the
task; ``store_many`` pipelines those calls. ``wait_for`` registers and blocks in one
round trip (:mod:`.redis_wait`), so it wakes the moment the result lands and
cannot miss it.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from .. import states
from ..conf import settings
from ..messaging.connection import mask_url
from .base import (
    COALESCE_FIELDS,
    OVERWRITE_FIELDS,
    ChordReady,
    ResultStore,
    empty_meta,
    missing_chord,
)
from .codec import dumps, loads
from .redis_wait import NOTIFY_LUA, run_scripts, wait_on_inbox

PREFIX = "tasks_q:"

_READY_LUA = " or ".join(f"cur == '{s}'" for s in sorted(states.READY_STATES))

# KEYS[1] result key, KEYS[2] its waiters set; ARGV: is_ready ('1'/'0'), ttl seconds
# (0: none), the JSON array [field, value, ...] (one argument: cheaper to send than many)
STORE_LUA = f"""
local ready = ARGV[1] == '1'
if not ready then
  local cur = redis.call('HGET', KEYS[1], 'status')
  if cur and ({_READY_LUA}) then return 0 end
end
redis.call('HSET', KEYS[1], unpack(cjson.decode(ARGV[3])))
if tonumber(ARGV[2]) > 0 then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
{NOTIFY_LUA}
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
    def waiters_key(task_id: str) -> str:
        """The set of the inboxes of the clients waiting on ``task_id``."""
        return f"{PREFIX}waiters:{task_id}"

    @staticmethod
    def _ttl(expires: Any = None) -> int:
        expiry = ResultStore.expiry(expires)
        return 0 if expiry is None else max(1, int(expiry.total_seconds()))

    # -- writes ----------------------------------------------------------------------

    def _args(self, record: dict[str, Any], ttl: int) -> tuple[str, int, str]:
        ready = "1" if record["status"] in states.READY_STATES else "0"
        fields = ["status", record["status"]]
        for key in OVERWRITE_FIELDS[1:]:
            fields += [key, dumps(record[key])]
        for key in COALESCE_FIELDS:
            if record[key] is not None:
                fields += [key, dumps(record[key])]
        return ready, ttl, json.dumps(fields, separators=(",", ":"))

    def write_records(self, records: list[dict[str, Any]]) -> None:
        if not records:
            return
        ttl = self._ttl()
        calls = []
        for record in records:
            task_id = record["task_id"]
            calls.append((self.key(task_id), self.waiters_key(task_id), *self._args(record, ttl)))
        run_scripts(self.client, STORE_LUA, 2, calls)

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

    def wait_for(
        self,
        task_id: str,
        timeout: float | None = None,
        interval: float = 0.5,
        on_message: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        task_id = str(task_id)
        keys = (self.key(task_id), self.waiters_key(task_id))
        return wait_on_inbox(
            self.client, task_id, keys, f"{PREFIX}inbox:", self._decode, timeout, on_message
        )

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
            missing_chord(group_id)
            return None
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
