"""What the redis:// transport tests share: the test database, queues, a collecting consumer."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import redis
from kombu import Connection, Consumer, Exchange, Producer, Queue

DB = int(os.environ.get("REDIS_TRANSPORT_DB", "6"))
ROOT = Path(__file__).resolve().parents[3]
#: short liveness settings so dead consumers are noticed within about a second
FAST = {"heartbeat_interval": 0.2, "heartbeat_timeout": 1.0}


def make_queue(name: str) -> Queue:
    return Queue(name, Exchange(name, type="direct"), routing_key=name)


def publish(conn: Connection, queue: Queue, body, **kwargs) -> None:
    Producer(conn.default_channel, serializer="json").publish(
        body, exchange=queue.exchange, routing_key=queue.routing_key, declare=[queue], **kwargs
    )


class Collector:
    """Consumes ``queues`` on ``conn``, recording (body, message) pairs."""

    def __init__(self, conn: Connection, queues: list[Queue], ack: bool = True, **kwargs) -> None:
        self.conn = conn
        self.ack = ack
        self.received: list = []
        self.times: list[float] = []
        self.consumer = Consumer(
            conn, queues, callbacks=[self.on_message], accept=["json"], **kwargs
        )
        self.consumer.consume()

    def on_message(self, body, message) -> None:
        self.times.append(time.time())
        self.received.append((body, message))
        if self.ack:
            message.ack()

    @property
    def bodies(self) -> list:
        return [body for body, _ in self.received]

    def drain_until(self, predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
        """Drain events until ``predicate()`` holds or ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        while not predicate():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            try:
                self.conn.drain_events(timeout=min(remaining, 0.5))
            except TimeoutError:
                pass
        return True

    def drain_for(self, seconds: float) -> None:
        """Keep consuming for ``seconds`` (to observe that nothing more arrives)."""
        self.drain_until(lambda: False, timeout=seconds)


def inflight(raw: redis.Redis) -> int:
    return sum(raw.hlen(key) for key in raw.scan_iter("tasks_q:inflight:*"))


def ready(raw: redis.Redis, queue: str) -> int:
    return sum(raw.llen(key) for key in raw.scan_iter(f"{queue}*"))


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def eta_headers(task_id: str, seconds: float) -> tuple[dict, float]:
    eta = datetime.now(UTC) + timedelta(seconds=seconds)
    return {"id": task_id, "task": "demo.add", "eta": eta.isoformat()}, eta.timestamp()
