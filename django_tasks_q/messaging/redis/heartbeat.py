"""Keeping owners alive: one daemon thread per process, and leases others may extend.

The beat runs beside the consumer, so a task that keeps its thread busy for
hours does not make its worker look dead.  After a fork the child starts with
an empty registry: it never beats for owners of its parent.

A thread shares its process's GIL with the task that process runs, and a task
that holds the GIL (a long call into C code that does not release it) stops
the thread as surely as a dead process.  So the registry also tells a listener
which owners this process holds (:attr:`Heartbeats.on_change`): the prefork
supervisor, which never runs a task, extends those owners' heartbeats with its
own connection (:func:`extend`) for as long as the process lives.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from . import keys

logger = logging.getLogger("django_tasks_q.messaging.redis")


@dataclass(frozen=True)
class Lease:
    """An owner whose heartbeat key lives ``ttl_ms`` after each beat."""

    owner: str
    ttl_ms: int


@dataclass
class _Entry:
    beat: Callable[[], None]
    interval: float
    due: float
    ttl_ms: int


class Heartbeats:
    """Calls each registered ``beat`` every ``interval`` seconds from one thread."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()
        self._changed = threading.Event()
        self._thread: threading.Thread | None = None
        #: called with the current leases whenever an owner comes or goes
        self.on_change: Callable[[list[Lease]], None] | None = None

    def register(self, owner: str, beat: Callable[[], None], interval: float, ttl: float) -> None:
        with self._lock:
            self._entries[owner] = _Entry(
                beat, interval, time.monotonic() + interval, int(ttl * 1000)
            )
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="tasks_q-redis-heartbeat", daemon=True
                )
                self._thread.start()
            self._announce()
        self._changed.set()

    def unregister(self, owner: str) -> None:
        with self._lock:
            if self._entries.pop(owner, None) is not None:
                self._announce()
        self._changed.set()

    def leases(self) -> list[Lease]:
        with self._lock:
            return [Lease(owner, entry.ttl_ms) for owner, entry in self._entries.items()]

    def _announce(self) -> None:
        """Tell the listener (lock held, so announcements never arrive out of order)."""
        if self.on_change is None:
            return
        leases = [Lease(owner, entry.ttl_ms) for owner, entry in self._entries.items()]
        try:
            self.on_change(leases)
        except Exception:
            logger.warning("Could not share this process's Redis owners", exc_info=True)

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


def extend(client: object, leases: Iterable[Lease]) -> int:
    """Extend the heartbeats of ``leases`` in one round trip; return how many were alive.

    Only keys that still exist are extended (``SET ... XX``): an owner that gave
    its messages back, or that was already taken for dead, is never revived.
    """
    leases = list(leases)
    if not leases:
        return 0
    with client.pipeline(transaction=False) as pipe:  # type: ignore[attr-defined]
        for lease in leases:
            pipe.set(keys.heartbeat(lease.owner), lease.owner, px=lease.ttl_ms, xx=True)
        return sum(1 for done in pipe.execute() if done)


_heartbeats: Heartbeats | None = None
_lock = threading.Lock()


def heartbeats() -> Heartbeats:
    """This process's registry (a fresh one in a forked child)."""
    global _heartbeats
    with _lock:
        if _heartbeats is None or _heartbeats.pid != os.getpid():
            _heartbeats = Heartbeats()
        return _heartbeats


def _after_fork_in_child() -> None:
    # A thread of the parent may have held the lock when it forked.
    global _lock
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)
