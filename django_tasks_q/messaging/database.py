"""``django://``: a kombu transport over Django models (DESIGN D3, docs/brokers.md).

* Publishing inserts a ``QueueMessage`` row on the caller's connection, inside
  the caller's transaction if there is one.
* Consuming claims a batch of ready rows in one statement (SKIP LOCKED on
  PostgreSQL and MariaDB/MySQL, ``BEGIN IMMEDIATE`` on SQLite), marks them with
  this connection's owner id and hands them out one at a time.
* Ack deletes the row, requeue releases it; rows of owners whose heartbeat
  stopped are released by any consumer (:func:`release_dead_owners`).
* PostgreSQL consumers wait on LISTEN/NOTIFY; other databases poll.
* Fanout exchanges write one ``BroadcastMessage`` row per publish.

* Consuming runs on the thread's own persistent connection (``database_conn``),
  which the worker's per-task ``close_old_connections`` leaves alone.

Modules: ``database_channel`` (the kombu channel), ``database_sql`` (statements),
``database_qos`` (acks), ``database_conn`` (the consumer's own connection),
``database_owner`` (heartbeats), ``database_notify`` (LISTEN),
``database_fanout``, ``database_bindings`` and ``database_payload``.
"""

from __future__ import annotations

import logging
import os
import time
import weakref
from queue import Empty
from typing import Any

import django
from django.db import DatabaseError, InterfaceError, OperationalError, connections
from kombu.transport import virtual

from ..conf import settings
from . import database_notify
from .database_bindings import SharedBindings
from .database_channel import Channel
from .database_conn import close_own, own_connection
from .database_fanout import delete_expired
from .database_owner import Heartbeat, check_liveness_settings, new_owner_id, release_dead_owners
from .database_qos import QoS

__all__ = ["Channel", "QoS", "Transport", "release_dead_owners"]

logger = logging.getLogger("django_tasks_q.messaging.database")

#: How often a consumer deletes expired broadcast rows.
BROADCAST_CLEANUP_EVERY = 60.0


class Transport(virtual.Transport):
    """The ``django://`` transport. Transport options: see docs/brokers.md."""

    Channel = Channel
    driver_type = "django"
    driver_name = "django"
    default_port = 0
    implements = virtual.Transport.implements.extend(
        exchange_type=frozenset(["direct", "topic", "fanout"])
    )
    connection_errors = (*virtual.Transport.connection_errors, OperationalError, InterfaceError)

    def __init__(self, client: Any, **kwargs: Any) -> None:
        super().__init__(client, **kwargs)
        options = client.transport_options
        from django.conf import settings as django_settings

        self.alias = options.get("database_alias") or settings.DATABASE_ALIAS
        if self.alias not in django_settings.DATABASES:
            raise ValueError(
                f"django:// uses database alias {self.alias!r}, which is not in DATABASES "
                f"(known: {', '.join(sorted(django_settings.DATABASES))}). Set "
                "TASKS_Q['DATABASE_ALIAS'] or the transport option 'database_alias'."
            )
        self.polling_interval = _positive(options, "polling_interval", settings.POLL_INTERVAL)
        self.claim_batch = int(_positive(options, "claim_batch", 10))
        self.ack_batch = int(_positive(options, "ack_batch", 1))
        self.release_interval = _positive(options, "release_interval", 5.0)
        self.broadcast_retention = _positive(options, "broadcast_retention", 300.0)
        self.use_listen = bool(options.get("listen", True))
        check_liveness_settings()
        self._fixed_owner: str | None = options.get("owner")
        self._owner: str | None = None
        self._owner_pid: int | None = None
        self.bindings = SharedBindings(self.alias)
        self.heartbeat = Heartbeat(self)
        self.listener = database_notify.Listener(self.alias)
        self._next_release = 0.0
        self._next_cleanup = 0.0
        _track(self)

    def driver_version(self) -> str:
        return django.get_version()

    @property
    def owner(self) -> str:
        """The owner id written on rows this connection claims (new in a forked child)."""
        if self._owner_pid != os.getpid():
            self._owner = self._fixed_owner or new_owner_id()
            self._owner_pid = os.getpid()
        return self._owner  # type: ignore[return-value]

    def consumed_queues(self) -> list[str]:
        return sorted({q for channel in self.channels for q in channel.consumed_queues()})

    def before_claim(self) -> None:
        """Our heartbeat must exist before we own any row."""
        if not self.heartbeat.started:
            self.heartbeat.start()

    def establish_connection(self) -> Any:
        connections[self.alias].ensure_connection()
        return super().establish_connection()

    def close_connection(self, connection: Any) -> None:
        try:
            super().close_connection(connection)
        finally:
            try:
                self.heartbeat.stop(delete_row=self._fixed_owner is None)
            except DatabaseError:
                logger.warning("Could not delete the consumer heartbeat row", exc_info=True)
            self.listener.close()
            close_own(self.alias)

    # -- the consume loop -------------------------------------------------------
    def drain_events(self, connection: Any, timeout: float | None = None) -> None:
        # On the thread's own connection: the worker closes the default one around tasks.
        with own_connection(self.alias):
            self._drain_events(timeout)

    def _drain_events(self, timeout: float | None) -> None:
        started = time.monotonic()
        while True:
            try:
                self._housekeeping()
                listening = (
                    self.use_listen
                    and database_notify.supported(self.alias)
                    and self.listener.ensure()
                )
                try:
                    self.cycle.get(self._deliver, timeout=timeout)
                    return
                except Empty:
                    pass
                for channel in self.channels:
                    channel.pending.flush()
            except (OperationalError, InterfaceError):
                _drop_broken_connection(self.alias)
                raise
            elapsed = time.monotonic() - started
            if timeout is not None and elapsed >= timeout:
                raise TimeoutError()
            wait = (
                self.polling_interval
                if timeout is None
                else min(self.polling_interval, timeout - elapsed)
            )
            if listening:
                self.listener.wait(wait, self._wanted)
            else:
                time.sleep(wait)

    def _wanted(self, payload: str) -> bool:
        if payload == "*":
            return True
        if payload.startswith("fanout:"):
            return any(payload[7:] in channel.fanout_exchanges() for channel in self.channels)
        return any(payload in channel.consumed_queues() for channel in self.channels)

    def _housekeeping(self) -> None:
        now = time.monotonic()
        self.heartbeat.beat_if_due()
        for channel in self.channels:
            if channel.pending.overdue():
                channel.pending.flush()
        if now >= self._next_release:
            self._next_release = now + self.release_interval
            release_dead_owners(self.alias)
        if now >= self._next_cleanup and any(ch.fanout_exchanges() for ch in self.channels):
            self._next_cleanup = now + BROADCAST_CLEANUP_EVERY
            delete_expired(self.alias, self.broadcast_retention)

    def forget_parent_state(self) -> None:
        """In a forked child: new owner, no heartbeat thread, no LISTEN socket of the parent's."""
        self.heartbeat = Heartbeat(self)
        self.listener = database_notify.Listener(self.alias)
        for channel in [*self.channels, *self._avail_channels]:
            channel.forget_parent_state()
        _discard_inherited_connection(self.alias)


def _positive(options: dict[str, Any], name: str, default: Any) -> float:
    value = options.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ValueError(
            f"django:// transport option {name!r} must be a positive number, got {value!r}."
        )
    return float(value)


def _drop_broken_connection(alias: str) -> None:
    connection = connections[alias]
    if not connection.in_atomic_block:
        connection.close_if_unusable_or_obsolete()


# -- fork safety ------------------------------------------------------------------
_live: weakref.WeakSet[Transport] = weakref.WeakSet()
_inherited: list[Any] = []  # parents' DB connections, kept unclosed in a forked child
_fork_hook_installed = False


def _track(transport: Transport) -> None:
    global _fork_hook_installed
    _live.add(transport)
    if not _fork_hook_installed:
        os.register_at_fork(after_in_child=_after_fork_in_child)
        _fork_hook_installed = True


def _after_fork_in_child() -> None:
    for transport in list(_live):
        transport.forget_parent_state()


def _discard_inherited_connection(alias: str) -> None:
    """Never use (or close: that would end the parent's session) a socket shared over fork."""
    connection = connections[alias]
    if connection.connection is not None and not connection.in_atomic_block:
        _inherited.append(connection.connection)
        connection.connection = None
