"""Owners of reserved rows on ``django://``: heartbeats, and releasing dead owners' rows.

Every consuming connection has an owner id (``host:pid:random``), written on
the rows it claims and kept alive in a ``WorkerHeartbeat`` row. The heartbeat
is written by the consuming thread when it calls ``drain_events`` and, when
that thread is busy (a long task), by a daemon thread with its own database
connection. Rows whose owner's heartbeat is older than ``HEARTBEAT_TIMEOUT``
(or whose owner never wrote one, once ``reserved_at`` is that old) go back to
their queue: :func:`release_dead_owners`.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
import weakref
from datetime import timedelta
from typing import Any

from django.db import IntegrityError, connections, transaction
from django.db.models import Exists, OuterRef, Q

from ..conf import settings
from .database_sql import notify_all, now, sqlite_retry

logger = logging.getLogger("django_tasks_q.messaging.database")


def new_owner_id() -> str:
    """A process-unique owner id: ``hostname:pid:random``."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


def release_dead_owners(alias: str | None = None, timeout: float | None = None) -> int:
    """Put back in their queues the rows reserved by owners that stopped heartbeating.

    A row is released when its owner's ``WorkerHeartbeat.last_seen`` is older
    than ``timeout`` (default ``HEARTBEAT_TIMEOUT``), or when its owner has no
    heartbeat row and the row was reserved longer ago than ``timeout``. Returns
    the number of rows released. Rows of a live owner are never touched, however
    long its task runs.
    """
    from ..models import QueueMessage, WorkerHeartbeat

    alias = alias or settings.DATABASE_ALIAS
    timeout = float(settings.HEARTBEAT_TIMEOUT if timeout is None else timeout)
    cutoff = now() - timedelta(seconds=timeout)
    heartbeats = WorkerHeartbeat._base_manager.using(alias)
    stale = heartbeats.filter(last_seen__lt=cutoff).values("owner")
    known = heartbeats.filter(owner=OuterRef("owner"))
    rows = (
        QueueMessage._base_manager.using(alias)
        .filter(owner__isnull=False)
        .filter(Q(owner__in=stale) | (Q(reserved_at__lt=cutoff) & ~Exists(known)))
    )
    released = 0
    if rows.exists():  # a read: on SQLite, no write lock taken every few seconds
        released = sqlite_retry(alias, lambda: rows.update(owner=None, reserved_at=None))
    if released:
        notify_all(alias)
        logger.warning(
            "Released %d message(s) reserved by workers whose heartbeat stopped over %ss ago; "
            "they will be redelivered.",
            released,
            timeout,
        )
    # Owners dead for long (their rows are released by now): forget them.
    sqlite_retry(alias, lambda: WorkerHeartbeat.prune(alias, timeout, now()))
    return released


def check_liveness_settings() -> None:
    """Refuse heartbeat settings that would make live workers look dead."""
    from django.core.exceptions import ImproperlyConfigured

    interval, timeout = settings.HEARTBEAT_INTERVAL, settings.HEARTBEAT_TIMEOUT
    if not isinstance(interval, int | float) or interval <= 0:
        raise ImproperlyConfigured(
            f"TASKS_Q['HEARTBEAT_INTERVAL'] must be a positive number of seconds, got {interval!r}."
        )
    if not isinstance(timeout, int | float) or timeout < 2 * interval:
        raise ImproperlyConfigured(
            f"TASKS_Q['HEARTBEAT_TIMEOUT'] ({timeout!r}) must be at least twice "
            f"HEARTBEAT_INTERVAL ({interval!r}), or live workers would be taken for dead "
            "(the defaults are 10 and 60)."
        )


class Heartbeat:
    """Keeps one transport's ``WorkerHeartbeat`` row fresh while the transport lives.

    The transport is held weakly: the thread ends when it is collected. Its
    ``owner`` and ``consumed_queues()`` are read at each beat, so a fork (new
    owner id) or a new consumer shows up on the next one.
    """

    def __init__(self, transport: Any) -> None:
        self.alias: str = transport.alias
        self._transport = weakref.ref(transport)
        self._interval = float(settings.HEARTBEAT_INTERVAL)
        self._last: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._owner: str | None = None

    @property
    def started(self) -> bool:
        return self._last is not None

    def due(self) -> bool:
        return self._last is not None and time.monotonic() - self._last >= self._interval

    def start(self) -> None:
        """Write the first beat now (before any claim) and start the backup thread."""
        if self.started:
            return
        self.beat()
        self._thread = threading.Thread(
            target=self._run, name=f"tasks_q-heartbeat-{self._owner}", daemon=True
        )
        self._thread.start()

    def beat_if_due(self) -> None:
        if self.due():
            self.beat()

    def beat(self) -> None:
        """Write the heartbeat row with the calling thread's connection."""
        from ..models import WorkerHeartbeat

        transport = self._transport()
        if transport is None:
            return
        owner, queues, stamp = transport.owner, transport.consumed_queues(), now()
        del transport
        self._owner = owner
        manager = WorkerHeartbeat._base_manager.using(self.alias)

        def attempt() -> None:
            if manager.filter(owner=owner).update(last_seen=stamp, queues=queues):
                return
            if self._stop.is_set():
                return
            try:
                with transaction.atomic(using=self.alias):
                    manager.create(
                        owner=owner,
                        hostname=socket.gethostname(),
                        pid=os.getpid(),
                        queues=queues,
                        last_seen=stamp,
                        stats={"role": "django:// consumer connection"},
                    )
            except IntegrityError:  # another thread of ours wrote it first
                pass

        sqlite_retry(self.alias, attempt)
        self._last = time.monotonic()

    def stop(self, delete_row: bool) -> None:
        """Stop beating; delete our row when we own its lifecycle (our rows are released)."""
        from ..models import WorkerHeartbeat

        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=2.0)
        owner, self._owner = self._owner, None
        if delete_row and self.started and owner:
            sqlite_retry(
                self.alias,
                lambda: (
                    WorkerHeartbeat._base_manager.using(self.alias).filter(owner=owner).delete()
                ),
            )
        self._last = None

    def _run(self) -> None:
        # The consuming thread beats from drain_events; this thread only steps in
        # when that one is busy (a long task), using its own connection.
        while not self._stop.wait(self._interval / 2):
            if self._transport() is None:
                return
            if not self.due():
                continue
            try:
                self.beat()
            except Exception:
                logger.warning("Could not write the consumer heartbeat; retrying", exc_info=True)
            finally:
                connections[self.alias].close()  # this thread's own connection
