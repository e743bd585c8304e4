"""Revoked task ids: persisted with an expiry, cached per process for the worker's hot path.

Storage. Revokes are ``RevokedTask`` rows in the Django database, whatever the
broker and result store are. The database is always there for this app (the
heartbeat rows, dead letters and the default broker live in it), a row carries its
own expiry, and one mechanism is simpler to reason about than a Redis set beside a
table. ``REVOKES_EXPIRE`` (seconds) is how long a revoke is honoured.

Reads. :func:`is_revoked` runs for every message a worker receives, so it reads a
per-process cache. The cache is loaded on first use (a worker started after the
revoke honours it), then refreshed at most once per :data:`REFRESH_INTERVAL` with
one query for rows created since the newest row it has seen (minus a small
overlap, for rows committed late or written by a host whose clock lags). The
``revoke`` control broadcast adds ids to the cache at once, so live workers do not
wait for the refresh. Expired rows are ignored on read and deleted occasionally by
the revoking process and by ``manage.py tasks_q cleanup``.
"""

from __future__ import annotations

import logging
import os
import signal as signal_module
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import DatabaseError, connections, router
from django.utils import timezone

from .conf import on_reload, settings

logger = logging.getLogger(__name__)

#: seconds between two refresh queries of a process's cache
REFRESH_INTERVAL = 1.0
#: rows created this long before the newest row seen are read again on refresh
OVERLAP = timedelta(seconds=10)
#: seconds between two deletions of expired rows by one process
PURGE_INTERVAL = 300.0
#: seconds between two prunes of expired ids from a process's cache
PRUNE_INTERVAL = 60.0


@dataclass(frozen=True, slots=True)
class RevokeEntry:
    """One revoked id as a worker sees it."""

    task_id: str
    expires: float  # a time.time() timestamp
    terminate: bool = False
    signal: str = "SIGTERM"


def normalize_signal(sig: str | int | None) -> str:
    """``"TERM"``, ``"sigkill"``, ``9`` -> ``"SIGTERM"``, ``"SIGKILL"``...; bad names raise ValueError."""
    if sig is None or sig == "":
        return "SIGTERM"
    try:
        if isinstance(sig, int) or (isinstance(sig, str) and sig.strip().isdigit()):
            return signal_module.Signals(int(sig)).name
        name = str(sig).strip().upper()
        if not name.startswith("SIG"):
            name = "SIG" + name
        return signal_module.Signals[name].name
    except (KeyError, ValueError):
        raise ValueError(
            f"Unknown signal {sig!r}; use a signal name such as SIGTERM, SIGINT, SIGQUIT or SIGKILL"
        ) from None


def task_ids_of(task_id: str | Iterable[str]) -> list[str]:
    """A task id or an iterable of them, as a list of non-empty strings."""
    ids = [task_id] if isinstance(task_id, str) else list(task_id)
    cleaned = []
    for value in ids:
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"A task id must be a non-empty string, got {value!r}")
        if len(value.strip()) > 255:
            raise ValueError(f"A task id is at most 255 characters, got {len(value.strip())}")
        cleaned.append(value.strip())
    if not cleaned:
        raise ValueError("revoke() needs at least one task id")
    return cleaned


def _expiry(expires: float | timedelta | datetime | None) -> datetime:
    now = timezone.now()
    if expires is None:
        return now + timedelta(seconds=float(settings.REVOKES_EXPIRE))
    if isinstance(expires, datetime):
        return expires if timezone.is_aware(expires) else timezone.make_aware(expires)
    if isinstance(expires, timedelta):
        return now + expires
    if isinstance(expires, int | float) and expires > 0:
        return now + timedelta(seconds=float(expires))
    raise ValueError(f"expires must be seconds (> 0), a timedelta or a datetime, got {expires!r}")


def _model() -> Any:
    from .models import RevokedTask

    return RevokedTask


# -- writes ------------------------------------------------------------------------------


def persist(
    task_ids: Iterable[str],
    terminate: bool = False,
    signal: str = "SIGTERM",
    expires: float | timedelta | datetime | None = None,
) -> list[str]:
    """Write (or refresh) ``RevokedTask`` rows for ``task_ids``; return the ids."""
    RevokedTask = _model()
    ids = list(dict.fromkeys(task_ids))
    until = _expiry(expires)
    rows = [RevokedTask(task_id=i, terminate=terminate, signal=signal, expires=until) for i in ids]
    features = connections[router.db_for_write(RevokedTask)].features
    options: dict[str, Any] = {
        "update_conflicts": True,
        "update_fields": ["terminate", "signal", "expires", "date_created"],
    }
    if features.supports_update_conflicts_with_target:
        options["unique_fields"] = ["task_id"]
    RevokedTask.objects.bulk_create(rows, **options)
    get_cache().remember(ids, until.timestamp(), terminate=terminate, signal=signal)
    _maybe_purge()
    return ids


def revoke(
    task_id: str | Iterable[str],
    terminate: bool = False,
    signal: str | int = "SIGTERM",
    expires: float | timedelta | datetime | None = None,
    *,
    destination: str | list[str] | None = None,
    reply: bool = False,
    timeout: float = 1.0,
) -> list[dict[str, Any]] | None:
    """Revoke tasks: persist the ids, store their state REVOKED, tell live workers.

    The persisted row is what counts: a worker that misses the broadcast (or starts
    later) still skips the task. ``terminate=True`` also signals a process running
    the task now. Returns the workers' replies when ``reply=True``.
    """
    from .control import ControlError, control

    ids = task_ids_of(task_id)
    sig = normalize_signal(signal)
    persist(ids, terminate=terminate, signal=sig, expires=expires)
    _store_revoked_state(ids)
    try:
        return control.broadcast(
            "revoke",
            {"task_id": ids, "terminate": terminate, "signal": sig},
            destination=destination,
            reply=reply,
            timeout=timeout,
        )
    except ControlError as exc:
        logger.warning(
            "Revoke of %s is stored; live workers will see it within %ss (broadcast failed: %s)",
            ", ".join(ids), REFRESH_INTERVAL, exc,
        )  # fmt: skip
        return [] if reply else None


def _store_revoked_state(task_ids: list[str]) -> None:
    """State REVOKED in the result store, except for tasks that already finished."""
    from . import states

    try:
        from .results import get_store

        store = get_store()
        metas = store.get_many_meta(task_ids)
        for task_id in task_ids:
            meta = metas.get(task_id) or {}
            if meta.get("status") in states.READY_STATES:
                continue
            store.mark_as_revoked(task_id, reason="revoked")
    except Exception as exc:  # the revoke itself is stored: do not fail the caller
        logger.warning("Could not store state REVOKED for %s: %r", ", ".join(task_ids), exc)


_last_purge = 0.0


def _maybe_purge() -> None:
    global _last_purge
    now = time.monotonic()
    if _last_purge and now - _last_purge < PURGE_INTERVAL:
        return
    _last_purge = now
    try:
        purge_expired()
    except DatabaseError as exc:
        logger.warning("Could not delete expired revokes: %r", exc)


def purge_expired(chunk_size: int = 1000) -> int:
    """Delete expired ``RevokedTask`` rows in chunks; return how many went."""
    RevokedTask = _model()
    total = 0
    while True:
        ids = list(
            RevokedTask.objects.filter(expires__lte=timezone.now()).values_list("pk", flat=True)[
                :chunk_size
            ]
        )
        if not ids:
            return total
        total += RevokedTask.objects.filter(pk__in=ids).delete()[0]


# -- reads -------------------------------------------------------------------------------


class RevokedCache:
    """This process's view of the revoked ids, refreshed at most every ``interval`` seconds."""

    def __init__(
        self,
        interval: float = REFRESH_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.interval = interval
        self.clock = clock
        self.wall_clock = wall_clock
        self._entries: dict[str, RevokeEntry] = {}
        self._watermark: datetime | None = None
        self._loaded = False
        self._next_refresh = 0.0
        self._next_prune = 0.0
        self._lock = threading.Lock()

    # hot path
    def is_revoked(self, task_id: str) -> bool:
        if self.clock() >= self._next_refresh:
            self.refresh()
        entry = self._entries.get(task_id)
        return entry is not None and entry.expires > self.wall_clock()

    def entry(self, task_id: str) -> RevokeEntry | None:
        """The live revoke of ``task_id`` (terminate flag, signal), or None."""
        return self._entries.get(task_id) if self.is_revoked(task_id) else None

    def revoked_ids(self) -> set[str]:
        if self.clock() >= self._next_refresh:
            self.refresh()
        now = self.wall_clock()
        with self._lock:
            return {e.task_id for e in self._entries.values() if e.expires > now}

    def remember(
        self,
        task_ids: Iterable[str],
        expires: float,
        terminate: bool = False,
        signal: str = "SIGTERM",
    ) -> None:
        """Add ids at once (from a broadcast or a local revoke), without a query."""
        with self._lock:
            for task_id in task_ids:
                self._entries[task_id] = RevokeEntry(task_id, expires, terminate, signal)

    def refresh(self, force: bool = False) -> None:
        """Read rows created since the last refresh (everything unexpired the first time)."""
        # Another thread refreshing a loaded set: the current set is good enough.
        if not self._lock.acquire(blocking=force or not self._loaded):
            return
        try:
            now = self.clock()
            if not force and now < self._next_refresh:
                return
            self._next_refresh = now + self.interval
            try:
                rows = self._query()
            except DatabaseError as exc:
                logger.warning(
                    "Could not refresh revoked task ids (keeping %d known): %r",
                    len(self._entries),
                    exc,
                )
                return
            for task_id, expires, terminate, sig, created in rows:
                self._entries[task_id] = RevokeEntry(
                    task_id, expires.timestamp(), terminate, sig or "SIGTERM"
                )
                if self._watermark is None or created > self._watermark:
                    self._watermark = created
            self._loaded = True
            if now >= self._next_prune:
                self._next_prune = now + PRUNE_INTERVAL
                wall = self.wall_clock()
                self._entries = {k: e for k, e in self._entries.items() if e.expires > wall}
        finally:
            self._lock.release()

    def _query(self) -> list[tuple[str, datetime, bool, str, datetime]]:
        qs = _model().objects.filter(expires__gt=timezone.now())
        if self._watermark is not None:
            qs = qs.filter(date_created__gt=self._watermark - OVERLAP)
        return list(qs.values_list("task_id", "expires", "terminate", "signal", "date_created"))

    def clear(self) -> None:
        with self._lock:
            self._entries = {}
            self._watermark = None
            self._loaded = False
            self._next_refresh = 0.0


_cache: RevokedCache | None = None
_cache_pid: int | None = None
_cache_lock = threading.Lock()


def get_cache() -> RevokedCache:
    """This process's cache (a fresh, cold one after fork)."""
    global _cache, _cache_pid
    cache = _cache
    if cache is None or _cache_pid != os.getpid():
        with _cache_lock:
            if _cache is None or _cache_pid != os.getpid():
                _cache, _cache_pid = RevokedCache(), os.getpid()
            cache = _cache
    return cache


@on_reload
def reset_cache() -> None:
    """Forget this process's cache; the next read loads from the database."""
    global _cache
    _cache = None


def is_revoked(task_id: str) -> bool:
    """True when ``task_id`` is revoked and the revoke has not expired. Cheap: see module doc."""
    return get_cache().is_revoked(task_id)


def revoked_ids() -> set[str]:
    """Every live revoked id this process knows."""
    return get_cache().revoked_ids()


def revoke_entry(task_id: str) -> RevokeEntry | None:
    """The live revoke of ``task_id`` (with its terminate flag and signal), or None."""
    return get_cache().entry(task_id)


def preload() -> int:
    """Load the revoked set now (a worker calls this at start); return its size."""
    cache = get_cache()
    cache.refresh(force=True)
    return len(cache.revoked_ids())


def remember(
    task_ids: Iterable[str],
    terminate: bool = False,
    signal: str = "SIGTERM",
    expires: float | None = None,
) -> None:
    """Mark ids revoked in this process at once (the worker's ``revoke`` handler)."""
    if expires is None:
        expires = time.time() + float(settings.REVOKES_EXPIRE)
    get_cache().remember(task_ids, expires, terminate=terminate, signal=signal)
