"""Result stores (DESIGN D5), chosen by ``TASKS_Q['RESULT_BACKEND']``.

* ``"django-db"`` (default): ``TaskResult`` rows in the Django database.
* ``"cache://<alias>"``: the Redis behind a django-redis cache alias.
* ``"redis://host:port/db"`` (also ``rediss://``, ``unix://``): a plain Redis client.
* ``"memory://"``: this process only (tests, eager mode).

:func:`get_store` builds the store lazily, once per process, and forgets it when
the settings change (``override_settings`` in tests simply works).
"""

from __future__ import annotations

import threading
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from ..conf import on_reload, settings
from .base import ChordReady, ResultStore, StoreItem

__all__ = ["ChordReady", "ResultStore", "StoreItem", "build_store", "get_store", "reset"]

_store: ResultStore | None = None
_lock = threading.Lock()

REDIS_SCHEMES = ("redis", "rediss", "unix")


def build_store(url: Any) -> ResultStore:
    """A new store for a ``RESULT_BACKEND`` value (a URL, or a ResultStore instance)."""
    if isinstance(url, ResultStore):
        return url
    if not isinstance(url, str) or not url:
        raise ImproperlyConfigured(
            f"TASKS_Q['RESULT_BACKEND'] must be a string, got {url!r}. "
            "Use 'django-db', 'cache://<alias>' or 'redis://host:6379/0'."
        )
    scheme = url.split("://", 1)[0].lower() if "://" in url else url.lower()
    if scheme in ("django-db", "django", "db"):
        from .database import DatabaseStore

        return DatabaseStore(url)
    if scheme == "cache":
        from .cache import CacheStore

        return CacheStore(url)
    if scheme == "memory":
        from .memory import MemoryStore

        return MemoryStore(url)
    if scheme in REDIS_SCHEMES:
        from .cache import RedisStore

        return RedisStore(url)
    from ..messaging.connection import mask_url

    raise ImproperlyConfigured(
        f"TASKS_Q['RESULT_BACKEND'] = {mask_url(url)!r} is not a known result store. "
        "Use 'django-db' (the default), 'cache://<django-redis cache alias>' or "
        "'redis://host:6379/0' (or 'memory://' in tests)."
    )


def get_store() -> ResultStore:
    """This process's result store, built on first use from ``RESULT_BACKEND``."""
    global _store
    store = _store
    if store is None:
        with _lock:
            if _store is None:
                _store = build_store(settings.RESULT_BACKEND)
            store = _store
    return store


@on_reload
def reset() -> None:
    """Forget the store (and PostgreSQL listeners); the next get_store() builds anew."""
    global _store
    with _lock:
        _store = None
    import sys

    listen = sys.modules.get(f"{__name__}.pg_listen")
    if listen is not None:
        listen.stop_listeners()
