"""The pidbox mailbox, named as Celery names it, and this process's control connections.

What we match with Celery (5.x defaults), so ``celery inspect``/``celery control``
and our workers understand each other on a shared broker:

* the mailbox namespace ``celery``: the fanout exchange ``celery.pidbox``, each
  worker's queue ``<hostname>.celery.pidbox``, the direct reply exchange
  ``reply.celery.pidbox`` and reply queues ``<oid>.reply.celery.pidbox``;
* the queue arguments: message TTL 300 s and queue expiry 10 s, exclusive and
  auto-deleted, not durable (``control_queue_ttl``/``control_queue_expires``);
* the message: ``{"method", "arguments", "destination", "pattern", "matcher",
  "ticket", "reply_to": {"exchange", "routing_key"}}`` in JSON, headers ``clock``
  and ``expires``; replies are ``{hostname: reply}`` with the ``ticket`` header;
* command names and argument names (``revoke(task_id, terminate, signal)``,
  ``rate_limit(task_name, rate_limit)``...) and the reply shapes ``{"ok": ...}`` /
  ``{"error": ...}``.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from kombu import Connection, Queue
from kombu.pidbox import Mailbox

from ..conf import on_reload, settings
from ..exceptions import TasksQError

#: Celery's ``control_exchange`` default
NAMESPACE = "celery"
#: Celery's ``control_queue_ttl`` (message TTL, seconds)
QUEUE_TTL = 300.0
#: Celery's ``control_queue_expires`` (an unused queue is deleted after this, seconds)
QUEUE_EXPIRES = 10.0
#: seconds between two looks for replies on polling transports (``django://`` without
#: LISTEN/NOTIFY, ``memory://``); only while a client waits for replies
REPLY_POLL = 0.05
#: seconds between two looks for commands by a worker's node on polling transports
NODE_POLL = 0.2


class ControlError(TasksQError):
    """A control command could not be sent (the broker is unreachable, bad arguments...)."""


def new_mailbox() -> Mailbox:
    """An unbound pidbox Mailbox with Celery's names and queue arguments."""
    return Mailbox(
        NAMESPACE,
        type="fanout",
        accept=["json"],
        serializer="json",
        queue_ttl=QUEUE_TTL,
        queue_expires=QUEUE_EXPIRES,
        reply_queue_ttl=QUEUE_TTL,
        reply_queue_expires=QUEUE_EXPIRES,
    )


def reply_queue(mailbox: Mailbox, oid: str) -> Queue:
    """The queue replies for one broadcast come back on (routing key ``oid``)."""
    return Queue(
        f"{oid}.{mailbox.reply_exchange.name}",
        exchange=mailbox.reply_exchange,
        routing_key=oid,
        durable=False,
        exclusive=True,
        auto_delete=True,
        expires=QUEUE_EXPIRES,
        message_ttl=QUEUE_TTL,
    )


def control_connection(url: str | None = None, poll: float = NODE_POLL) -> Connection:
    """A connection for control traffic: polling transports look every ``poll`` seconds.

    Control commands are rare and a person waits for the answer, so on transports
    that poll (``django://`` on SQLite, ``memory://``) these connections poll faster
    than task consumers (``POLL_INTERVAL``). Blocking transports ignore the option.
    """
    from ..messaging.connection import broker_connection

    options = dict(settings.BROKER_TRANSPORT_OPTIONS or {})
    interval = options.get("polling_interval")
    options["polling_interval"] = min(poll, interval) if interval else poll
    return broker_connection(url or settings.BROKER_URL, transport_options=options)


class Connections:
    """This process's pool of broker connections for control clients.

    Built lazily on first use, rebuilt after fork and when ``TASKS_Q`` changes.
    """

    def __init__(self) -> None:
        self._pool: Any = None
        self._pid: int | None = None
        self._url: str | None = None
        self._lock = threading.Lock()

    def pool(self) -> Any:
        pool = self._pool
        if pool is None or self._pid != os.getpid():
            with self._lock:
                if self._pool is None or self._pid != os.getpid():
                    self._url = settings.BROKER_URL
                    connection = control_connection(self._url, REPLY_POLL)
                    self._pool = connection.Pool(limit=settings.BROKER_POOL_LIMIT)
                    self._pid = os.getpid()
                pool = self._pool
        return pool

    @property
    def url(self) -> str:
        return self._url or settings.BROKER_URL

    def acquire(self, timeout: float | None = None) -> Connection:
        return self.pool().acquire(block=True, timeout=timeout)

    def reset(self) -> None:
        with self._lock:
            pool, pid, self._pool = self._pool, self._pid, None
        if pool is not None and pid == os.getpid():
            try:
                pool.force_close_all()
            except Exception:  # a dead connection must not break a settings reload
                pass


connections = Connections()


@on_reload
def _reset_connections() -> None:
    connections.reset()
