"""What a worker does beside running tasks: its heartbeat row and event, due delayed messages.

* the ``WorkerHeartbeat`` row (owner ``worker:<hostname>``) with pid, queues,
  concurrency and stats, every ``HEARTBEAT_INTERVAL``, so the admin lists live
  workers without an event consumer (``--without-heartbeat`` turns it off). The
  broker transports keep their own per-connection rows for dead-owner detection;
  this row owns no message.
* deleting the heartbeat rows of workers and consumers silent for ten heartbeat
  timeouts (a ``SIGKILL`` leaves its row behind);
* a ``worker-heartbeat`` event with ``-E``;
* publishing due ``DelayedMessage`` rows on brokers without a delayed store.

The prefork supervisor calls :meth:`Services.tick` from its loop; the solo and
threads pools run it in a :class:`ServiceThread`.
"""

from __future__ import annotations

import logging
import os
import platform
import threading
import time
from typing import TYPE_CHECKING, Any

from django.db import DatabaseError, connections, router
from django.utils import timezone

from .. import __version__
from ..conf import settings
from .delayed import DelayedPublisher, has_own_store

if TYPE_CHECKING:
    from .worker import Worker

logger = logging.getLogger("django_tasks_q.worker")

DELAYED_EVERY = 1.0


def heartbeat_owner(hostname: str) -> str:
    return f"worker:{hostname}"


class Services:
    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.interval = float(settings.HEARTBEAT_INTERVAL)
        self._next_beat = 0.0
        self._next_delayed = 0.0
        self._next_prune = 0.0
        self._delayed = None if has_own_store(worker.scheme) else DelayedPublisher()

    def tick(self) -> None:
        now = time.monotonic()
        if now >= self._next_beat:
            self._next_beat = now + self.interval
            self._beat()
        if self._delayed is not None and now >= self._next_delayed:
            self._next_delayed = now + DELAYED_EVERY
            try:
                self._delayed.tick()
            except Exception:
                logger.exception("Could not publish due delayed messages; retrying")

    def _beat(self) -> None:
        worker = self.worker
        stats: dict[str, Any] | None = None
        if not worker.config.without_heartbeat:
            stats = worker.brief_stats()
            try:
                write_heartbeat(worker, stats)
                self._prune()
            except DatabaseError as exc:
                logger.warning("Could not write the worker heartbeat row: %r", exc)
        if worker.events.enabled:
            stats = stats or worker.brief_stats()
            worker.events.send(
                "worker-heartbeat", freq=self.interval, sw_ident="django-tasks-q", sw_ver=__version__,
                sw_sys=platform.system(), active=stats.get("active", 0), processed=stats.get("processed", 0),
                loadavg=list(os.getloadavg()),
            )  # fmt: skip

    def _prune(self) -> None:
        """Now and then, delete the rows of workers that died long ago (any broker)."""
        from ..models import WorkerHeartbeat

        now = time.monotonic()
        if now < self._next_prune:
            return
        timeout = float(settings.HEARTBEAT_TIMEOUT)
        self._next_prune = now + timeout
        WorkerHeartbeat.prune(router.db_for_write(WorkerHeartbeat), timeout, timezone.now())

    def stop(self) -> None:
        if self.worker.config.without_heartbeat:
            return
        from ..models import WorkerHeartbeat

        try:
            WorkerHeartbeat.objects.filter(owner=heartbeat_owner(self.worker.hostname)).delete()
        except DatabaseError as exc:
            logger.warning("Could not delete the worker heartbeat row: %r", exc)


def write_heartbeat(worker: Worker, stats: dict[str, Any]) -> None:
    from ..models import WorkerHeartbeat

    WorkerHeartbeat.objects.update_or_create(
        owner=heartbeat_owner(worker.hostname),
        defaults={
            "hostname": worker.hostname,
            "pid": os.getpid(),
            "queues": sorted(worker.queues()),
            "concurrency": worker.concurrency(),
            "last_seen": timezone.now(),
            "stats": stats,
        },
    )


class ServiceThread(threading.Thread):
    """Runs :class:`Services` beside an in-process pool until :meth:`stop`."""

    def __init__(self, services: Services) -> None:
        super().__init__(name="tasks_q-services", daemon=True)
        self.services = services
        self._stopping = threading.Event()

    def run(self) -> None:
        while not self._stopping.is_set():
            try:
                self.services.tick()
            except Exception:
                logger.exception("Worker services failed; continuing")
            finally:
                connections.close_all()  # this thread's own connections
            self._stopping.wait(min(DELAYED_EVERY, self.services.interval))

    def stop(self) -> None:
        self._stopping.set()
        if self.is_alive():
            self.join(timeout=5.0)
