"""What the django:// transport tests share: queues, rows, heartbeats, a consumer process."""

from __future__ import annotations

import json
import os
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.test import override_settings
from django.utils import timezone
from kombu import Connection, Consumer, Exchange, Producer, Queue

from django_tasks_q.messaging.connection import broker_connection
from tests.integration.test_broker_contract import wait_for

ROOT = Path(__file__).resolve().parents[3]
on_postgres = pytest.mark.skipif(
    os.environ.get("TQ_DATABASE") != "postgres",
    reason="PostgreSQL only: run with TQ_DATABASE=postgres",
)


def models():
    from django_tasks_q.models import QueueMessage, WorkerHeartbeat

    return QueueMessage, WorkerHeartbeat


def publish(conn: Connection, queue: Queue, body: Any, **kwargs: Any) -> None:
    Producer(conn.default_channel).publish(
        body, exchange=queue.exchange, routing_key=queue.routing_key, declare=[queue], **kwargs
    )


def get(conn: Connection, queue: Queue, timeout: float = 10.0) -> Any:
    bound = queue(conn.default_channel)
    return wait_for(lambda: bound.get(no_ack=False), timeout, f"a message on {queue.name}")


def rows(queue: Queue) -> list[Any]:
    QueueMessage, _ = models()
    return list(QueueMessage.objects.filter(queue=queue.name).order_by("id"))


def heartbeat_settings(interval: float, timeout: float) -> override_settings:
    return override_settings(
        TASKS_Q={
            **django_settings.TASKS_Q,
            "HEARTBEAT_INTERVAL": interval,
            "HEARTBEAT_TIMEOUT": timeout,
        }
    )


def reserve_as(queue: Queue, owner: str, reserved_ago: float) -> None:
    QueueMessage, _ = models()
    QueueMessage.objects.filter(queue=queue.name).update(
        owner=owner,
        reserved_at=timezone.now() - timedelta(seconds=reserved_ago),
        delivery_count=1,
    )


def beat_as(owner: str, seen_ago: float) -> None:
    _, WorkerHeartbeat = models()
    WorkerHeartbeat.objects.update_or_create(
        owner=owner,
        defaults={
            "hostname": "elsewhere",
            "last_seen": timezone.now() - timedelta(seconds=seen_ago),
        },
    )


def consumer_main() -> None:
    """A consumer process: drain ``TQ_TEST_QUEUE``, write what it got to ``TQ_TEST_OUT``.

    It stops once the file ``TQ_TEST_DONE`` exists (everything is published) and no
    message came for a second.
    """
    name = os.environ["TQ_TEST_QUEUE"]
    seen: list[int] = []
    queue = Queue(name, Exchange(name, type="direct"), routing_key=name)

    def on_message(body: Any, message: Any) -> None:
        seen.append(body["n"])
        message.ack()

    conn = broker_connection("django://", transport_options={"polling_interval": 0.05})
    with conn, Consumer(conn, [queue], callbacks=[on_message], prefetch_count=10):
        done, last = Path(os.environ["TQ_TEST_DONE"]), time.monotonic()
        while not (done.exists() and time.monotonic() - last > 1.0):
            try:
                conn.drain_events(timeout=0.5)
                last = time.monotonic()
            except TimeoutError:
                pass
    Path(os.environ["TQ_TEST_OUT"]).write_text(json.dumps(seen))


def drain_once(conn: Connection) -> None:
    try:
        conn.drain_events(timeout=0.1)
    except TimeoutError:
        pass
