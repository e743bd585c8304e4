"""One daemon thread per process keeps the heartbeat keys of its owners alive.

The beat runs beside the consumer, so a task that keeps its thread busy for
hours does not make its worker look dead.  After a fork the child starts with
an empty registry: it never beats for owners of its parent.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

logger = logging.getLogger("django_tasks_q.messaging.redis")


@dataclass
class _Entry:
    beat: Callable[[], None]
    interval: float
    due: float


class Heartbeats:
    """Calls each registered ``beat`` every ``interval`` seconds from one thread."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()
        self._changed = threading.Event()
        self._thread: threading.Thread | None = None

    def register(self, owner: str, beat: Callable[[], None], interval: float) -> None:
        with self._lock:
            self._entries[owner] = _Entry(beat, interval, time.monotonic() + interval)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="tasks_q-redis-heartbeat", daemon=True
                )
                self._thread.start()
        self._changed.set()

    def unregister(self, owner: str) -> None:
        with self._lock:
            self._entries.pop(owner, None)
        self._changed.set()

    def __contains__(self, owner: str) -> bool:
        return owner in self._entries

    def _due(self) -> tuple[list[Callable[[], None]], float | None]:
        now = time.monotonic()
        with self._lock:
            if not self._entries:
                self._thread = None
                return [], None
            due = []
            for entry in self._entries.values():
                if entry.due <= now:
                    due.append(entry.beat)
                    entry.due = now + entry.interval
            wait = min(entry.due for entry in self._entries.values()) - now
        return due, max(wait, 0.0)

    def _run(self) -> None:
        while True:
            due, wait = self._due()
            if wait is None:
                return
            for beat in due:
                try:
                    beat()
                except Exception:  # a lost beat is retried next interval
                    logger.warning("Redis heartbeat failed; retrying", exc_info=True)
            self._changed.wait(wait)
            self._changed.clear()


_heartbeats: Heartbeats | None = None
_lock = threading.Lock()


def heartbeats() -> Heartbeats:
    """This process's registry (a fresh one in a forked child)."""
    global _heartbeats
    with _lock:
        if _heartbeats is None or _heartbeats.pid != os.getpid():
            _heartbeats = Heartbeats()
        return _heartbeats
