"""The prefork supervisor keeps its children's broker leases alive.

On ``redis://`` and ``django://`` a consuming process is an *owner*: the
messages it reserved stay its own only while its heartbeat lives (a key with a
TTL on Redis, a ``WorkerHeartbeat`` row on the database), and any consumer
gives a silent owner's messages back to their queues. A child beats for itself
from a thread, but that thread shares the child's GIL with the task the child
runs: a task that holds the GIL (a long call into C code that does not release
it: a big regular expression, ``sum(range(10**9))``, some C extensions) stops
the thread as surely as a dead process. The heartbeat lapses, and the child's
messages — the running one included — run a second time elsewhere.

So the supervisor, which never runs a task, vouches for its children:

* each child lists the owners it holds in its shared-memory slot (:func:`share`);
* a thread of the supervisor, with a connection of its own, refreshes those
  owners' heartbeats every heartbeat interval (:class:`LeaseKeeper`), until it
  reaps the child. It only refreshes heartbeats that exist (a closing consumer
  deletes its own; on Redis an expired one is gone too), so it never revives an
  owner that gave its messages back.

A child that outlives its supervisor still beats for itself. The solo and
threads pools have no second process: their beat is a thread (docs/worker.md).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from ..conf import settings

if TYPE_CHECKING:
    from .engine import Engine
    from .slots import Slot

logger = logging.getLogger("django_tasks_q.worker")

REDIS_SCHEMES = frozenset({"redis", "rediss", "sentinel"})
DATABASE_SCHEMES = frozenset({"django"})


def applies_to(broker_url: str) -> bool:
    """True for brokers whose consumers own their reserved messages through a heartbeat."""
    return urlparse(broker_url).scheme in REDIS_SCHEMES | DATABASE_SCHEMES


def share(slot: Slot, engine: Engine) -> None:
    """In a child after fork: keep ``slot`` listing the owners this process holds."""
    if urlparse(engine.config.broker_url).scheme in REDIS_SCHEMES:
        from ..messaging.redis.heartbeat import heartbeats

        # A Redis owner comes with each channel's first claim (and goes when it closes).
        def on_change(leases: list[Any]) -> None:
            slot.set_leases([(lease.owner, lease.ttl_ms) for lease in leases])

        heartbeats().on_change = on_change
    else:  # django://: one owner per connection, known once connected

        def on_connect(engine: Engine) -> None:
            slot.set_leases([(engine.consumer.connection.transport.owner, 0)])

        engine.on_connect = on_connect


class _RedisLeases:
    def __init__(self, broker_url: str) -> None:
        from ..messaging.connection import broker_connection
        from ..messaging.redis.options import Options

        self.url = broker_url
        self.connection: Any = None
        options = Options.resolve(broker_connection(broker_url).transport_options)
        self.interval = options.heartbeat_interval

    def refresh(self, leases: list[tuple[str, int]]) -> None:
        from ..messaging.connection import broker_connection
        from ..messaging.redis.heartbeat import Lease, extend

        if self.connection is None:
            self.connection = broker_connection(self.url)
        channel = self.connection.default_channel
        extend(channel.lease_client(), [Lease(owner, ttl) for owner, ttl in leases])

    def close(self) -> None:
        connection, self.connection = self.connection, None
        if connection is not None:
            try:
                connection.release()
            except Exception:
                pass


class _DatabaseLeases:
    def __init__(self, broker_url: str) -> None:
        from ..messaging.connection import broker_connection

        options = broker_connection(broker_url).transport_options
        self.alias = options.get("database_alias") or settings.DATABASE_ALIAS
        self.interval = float(settings.HEARTBEAT_INTERVAL)

    def refresh(self, leases: list[tuple[str, int]]) -> None:
        from ..messaging.database_sql import now, sqlite_retry
        from ..models import WorkerHeartbeat

        owners = [owner for owner, _ in leases]
        rows = WorkerHeartbeat._base_manager.using(self.alias).filter(owner__in=owners)
        sqlite_retry(self.alias, lambda: rows.update(last_seen=now()))

    def close(self) -> None:
        from django.db import connections

        connections[self.alias].close()  # this thread's own: none is open when we fork


class LeaseKeeper(threading.Thread):
    """Refreshes the heartbeats of the owners listed in the watched slots, every interval."""

    def __init__(self, broker_url: str) -> None:
        super().__init__(name="tasks_q-leases", daemon=True)
        redis = urlparse(broker_url).scheme in REDIS_SCHEMES
        self.leases = _RedisLeases(broker_url) if redis else _DatabaseLeases(broker_url)
        self._slots: dict[int, Slot] = {}
        self._lock = threading.Lock()  # held while beating: see paused()
        self._stopping = threading.Event()
        self._failing = False

    def watch(self, slot: Slot) -> None:
        with self._lock:
            self._slots[slot.index] = slot

    def forget(self, index: int) -> None:
        """Stop vouching for the child of slot ``index`` (it died or exited)."""
        with self._lock:
            self._slots.pop(index, None)

    @contextmanager
    def paused(self) -> Iterator[None]:
        """No beat is under way inside this block: fork here, no lock of a beat is held."""
        with self._lock:
            yield

    def stop(self) -> None:
        self._stopping.set()
        if self.is_alive():
            self.join(timeout=5.0)

    def run(self) -> None:
        next_at = time.monotonic()
        try:
            while not self._stopping.wait(max(0.0, next_at - time.monotonic())):
                with self._lock:
                    self._beat()
                # a steady cadence, without a burst of catch-up beats after a stall
                next_at = max(next_at + self.leases.interval, time.monotonic())
        finally:
            self.leases.close()

    def _beat(self) -> None:
        leases = [lease for slot in self._slots.values() for lease in slot.leases()]
        if not leases:
            return
        try:
            self.leases.refresh(leases)
        except Exception as exc:
            if not self._failing:  # once per outage: the children still beat for themselves
                logger.warning(
                    "Could not refresh the heartbeats of the worker processes (%r); retrying", exc
                )
            self._failing = True
            self.leases.close()
            return
        finally:
            if isinstance(self.leases, _DatabaseLeases):
                self.leases.close()
        self._failing = False
