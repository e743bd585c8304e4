"""Publishing task messages: one lazily built connection pool per process."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from typing import Any

from kombu import Exchange, Queue
from kombu.pools import ProducerPool

from ..conf import on_reload, settings
from ..exceptions import PublishError
from ..message import EncodedMessage
from .connection import broker_connection, mask_url


class Publisher:
    """Owns this process's producer pool and the set of queues already declared."""

    def __init__(self, url: str | None = None) -> None:
        self.url = url or settings.BROKER_URL
        self.pid = os.getpid()
        self._connection = broker_connection(self.url)
        self._pool = ProducerPool(
            self._connection.Pool(limit=settings.BROKER_POOL_LIMIT),
            limit=settings.BROKER_POOL_LIMIT,
        )
        self._declared: set[str] = set()
        self._lock = threading.Lock()

    def entities(self, queue: str, max_priority: int | None = None) -> tuple[Exchange, Queue]:
        exchange = Exchange(queue, type="direct", durable=True)
        arguments = {"x-max-priority": max_priority} if max_priority else None
        return exchange, Queue(
            queue, exchange, routing_key=queue, durable=True, queue_arguments=arguments
        )

    def publish(
        self,
        encoded: EncodedMessage,
        queue: str,
        *,
        routing_key: str | None = None,
        exchange: str | None = None,
        priority: int | None = None,
        retry: bool | None = None,
        retry_policy: dict[str, Any] | None = None,
        delivery_mode: int = 2,
    ) -> None:
        retry = settings.PUBLISH_RETRY if retry is None else retry
        policy = dict(settings.PUBLISH_RETRY_POLICY)
        policy.update(retry_policy or {})
        ex, q = self.entities(queue, _max_priority(queue))
        properties = dict(encoded.properties)
        if priority is None:
            priority = properties.get("priority")
        properties.pop("priority", None)  # passed once, as ``priority=``
        try:
            with self._pool.acquire(block=True) as producer:
                declare = [q] if queue not in self._declared else []
                producer.publish(
                    encoded.body,
                    exchange=exchange if exchange is not None else ex,
                    routing_key=routing_key or queue,
                    headers=encoded.headers,
                    content_type=encoded.content_type,
                    content_encoding=encoded.content_encoding,
                    priority=priority,
                    delivery_mode=delivery_mode,
                    declare=declare,
                    retry=retry,
                    retry_policy=policy,
                    **properties,
                )
                if declare:
                    with self._lock:
                        self._declared.add(queue)
        except PublishError:
            raise
        except (OSError, ConnectionError) as exc:
            raise PublishError(
                f"Could not publish task {encoded.headers.get('task')!r} to "
                f"{mask_url(self.url)} (queue {queue!r}): {exc}. Is the broker running?"
            ) from exc
        except Exception as exc:
            if type(exc).__module__.startswith(("kombu", "amqp", "redis")):
                raise PublishError(
                    f"Could not publish task {encoded.headers.get('task')!r} to "
                    f"{mask_url(self.url)} (queue {queue!r}): {exc!r}"
                ) from exc
            raise

    def publish_many(self, items: Iterable[tuple[EncodedMessage, str, dict[str, Any]]]) -> None:
        for encoded, queue, options in items:
            self.publish(encoded, queue, **options)

    def close(self) -> None:
        try:
            self._pool.force_close_all()
        finally:
            self._connection.release()


def _max_priority(queue: str) -> int | None:
    from ..routing import declared_queues

    for spec in declared_queues():
        if spec.name == queue:
            return spec.max_priority
    return None


_publisher: Publisher | None = None
_publisher_lock = threading.Lock()


def get_publisher() -> Publisher:
    """This process's Publisher, rebuilt after fork or a settings change."""
    global _publisher
    pub = _publisher
    if pub is None or pub.pid != os.getpid():
        with _publisher_lock:
            pub = _publisher
            if pub is None or pub.pid != os.getpid():
                pub = _publisher = Publisher()
    return pub


@on_reload
def reset_publisher() -> None:
    global _publisher
    pub, _publisher = _publisher, None
    if pub is not None and pub.pid == os.getpid():
        try:
            pub.close()
        except Exception:  # closing a dead connection must not break a reload
            pass
