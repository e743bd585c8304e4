"""Task and worker events on Celery's event exchange (``celeryev``), in Celery's format.

Workers started with ``-E`` send ``task-received``, ``task-started``,
``task-succeeded``, ``task-failed``, ``task-retried``, ``task-revoked`` and
``worker-heartbeat``; Celery's own monitors (``celery events``, Flower) read them.
An event is a JSON dict with ``type``, ``hostname``, ``timestamp``,
``utcoffset``, ``pid`` and ``clock`` plus its fields, published with routing key
``type`` with dashes turned to dots (``task.succeeded``), transient.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from typing import Any

from kombu import Exchange, Producer

logger = logging.getLogger("django_tasks_q.events")

EXCHANGE_NAME = "celeryev"


def event_exchange(connection: Any) -> Exchange:
    """Celery's event exchange: topic, except fanout on Redis (as Celery does)."""
    kind = "topic"
    if getattr(connection.transport, "driver_type", "") in ("redis",):
        kind = "fanout"
    return Exchange(EXCHANGE_NAME, type=kind)


def utcoffset() -> int:
    """Hours west of UTC, Celery's ``utcoffset`` field."""
    offset = time.altzone if time.daylight and time.localtime().tm_isdst else time.timezone
    return offset // 3600


class EventDispatcher:
    """``EventDispatcher(connection, hostname).send("task-succeeded", uuid=..., runtime=...)``."""

    def __init__(self, connection: Any, hostname: str, enabled: bool = True) -> None:
        self.connection = connection
        self.hostname = hostname
        self.enabled = enabled
        self._clock = itertools.count(1)
        self._producer: Producer | None = None
        self._exchange: Exchange | None = None

    def _ready(self) -> Producer:
        if self._producer is None:
            self._exchange = event_exchange(self.connection)
            self._producer = Producer(self.connection.channel(), exchange=self._exchange)
            self._exchange.declare(channel=self._producer.channel)
        return self._producer

    def event(self, type: str, **fields: Any) -> dict[str, Any]:  # noqa: A002 - Celery's name
        return {
            "type": type,
            "hostname": self.hostname,
            "timestamp": time.time(),
            "utcoffset": utcoffset(),
            "pid": os.getpid(),
            "clock": next(self._clock),
            **fields,
        }

    def send(self, type: str, **fields: Any) -> None:  # noqa: A002 - Celery's name
        """Publish one event; a failure is logged, never raised (events are best effort)."""
        if not self.enabled:
            return
        try:
            producer = self._ready()
            producer.publish(
                self.event(type, **fields),
                routing_key=type.replace("-", "."),
                exchange=self._exchange,
                serializer="json",
                headers={"hostname": self.hostname},
                delivery_mode=1,
                retry=False,
            )
        except Exception as exc:
            self._producer = None
            logger.warning("Could not send event %s: %r", type, exc)

    def close(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                producer.channel.close()
            except Exception:
                pass
