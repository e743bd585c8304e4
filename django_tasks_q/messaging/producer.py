"""Publishing task messages: one lazily built pool of lanes per process.

The :class:`Publisher` caches what does not change between two sends (the kombu
entities of each queue, its declaration, the retry policy) and lends each send a
:class:`~.lanes.Lane`: an open connection and channel.  See ``lanes.py`` for how a
lane writes a message with the transport's own primitives.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable
from typing import Any

from kombu import Exchange, Queue

from ..conf import on_reload, settings
from ..exceptions import PublishError
from ..message import EncodedMessage
from .connection import mask_url
from .lanes import Lane, LanePool, Outgoing, Route


class Publisher:
    """Owns this process's lanes and the routes (queues) it has declared."""

    def __init__(self, url: str | None = None) -> None:
        self.url = url or settings.BROKER_URL
        self.pid = os.getpid()
        self._lanes = LanePool(self.url, settings.BROKER_POOL_LIMIT)
        self._routes: dict[str, Route] = {}
        self._max_priorities = {spec.name: spec.max_priority for spec in _declared_queues()}
        self._retry = bool(settings.PUBLISH_RETRY)
        self._policy = dict(settings.PUBLISH_RETRY_POLICY)

    def entities(self, queue: str, max_priority: int | None = None) -> tuple[Exchange, Queue]:
        exchange = Exchange(queue, type="direct", durable=True)
        arguments = {"x-max-priority": max_priority} if max_priority else None
        return exchange, Queue(
            queue, exchange, routing_key=queue, durable=True, queue_arguments=arguments
        )

    def route(self, queue: str) -> Route:
        route = self._routes.get(queue)
        if route is None:
            entity = self.entities(queue, self._max_priorities.get(queue))[1]
            route = self._routes[queue] = Route(queue, entity)
        return route

    def outgoing(
        self,
        encoded: EncodedMessage,
        queue: str,
        *,
        routing_key: str | None = None,
        exchange: str | None = None,
        priority: int | None = None,
        delivery_mode: int = 2,
    ) -> Outgoing:
        if priority is None:
            priority = encoded.properties.get("priority")
        return Outgoing(encoded, self.route(queue), exchange, routing_key, priority, delivery_mode)

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
        item = self.outgoing(
            encoded, queue, routing_key=routing_key, exchange=exchange, priority=priority,
            delivery_mode=delivery_mode,
        )  # fmt: skip
        self.send([item], retry, retry_policy)

    def publish_many(self, items: Iterable[tuple[EncodedMessage, str, dict[str, Any]]]) -> None:
        """Publish ``(encoded, queue, options)`` triples with as few round trips as the broker allows.

        On Redis they go out in pipelines; on ``django://`` in one transaction (inside
        the caller's, if there is one); on RabbitMQ back to back on one channel.
        """
        groups: dict[tuple[Any, Any], list[Outgoing]] = {}
        for encoded, queue, options in items:
            options = dict(options)
            key = (options.pop("retry", None), _frozen(options.pop("retry_policy", None)))
            groups.setdefault(key, []).append(self.outgoing(encoded, queue, **options))
        for (retry, policy), outgoing in groups.items():
            self.send(outgoing, retry, dict(policy) if policy else None)

    def send(
        self,
        items: list[Outgoing],
        retry: bool | None = None,
        retry_policy: dict[str, Any] | None = None,
    ) -> None:
        """Send ``items`` on one lane, retrying on connection errors as the policy says."""
        if not items:
            return
        attempt, policy = 0, None
        while True:
            lane = self._lanes.acquire()
            try:
                self._send_on(lane, items)
                return
            except BaseException as exc:
                lane.reset()
                if not isinstance(exc, lane.errors):
                    wrapped = self._error(items[0], exc)
                    if wrapped is None:
                        raise
                    raise wrapped from exc
                if policy is None:
                    policy = {**self._policy, **(retry_policy or {})}
                    retrying = self._retry if retry is None else retry
                    policy["max_retries"] = int(policy.get("max_retries") or 0) if retrying else 0
                if attempt >= policy["max_retries"]:
                    raise self._error(items[0], exc) or exc from exc
            finally:
                self._lanes.release(lane)
            time.sleep(_interval(policy, attempt))
            attempt += 1

    def _send_on(self, lane: Lane, items: list[Outgoing]) -> None:
        for item in items:
            route = item.route
            if not route.declared:
                lane.declare(route)
                route.declared = True
        if len(items) == 1:
            lane.send(items[0])
        else:
            lane.send_many(items)

    def _error(self, item: Outgoing, exc: BaseException) -> PublishError | None:
        """``exc`` as a PublishError naming the task, the broker and the queue, if it is one."""
        if isinstance(exc, PublishError):
            return exc
        task = item.encoded.headers.get("task")
        where = f"{mask_url(self.url)} (queue {item.route.queue!r})"
        if isinstance(exc, OSError | ConnectionError):
            return PublishError(
                f"Could not publish task {task!r} to {where}: {exc}. Is the broker running?"
            )
        if isinstance(exc, Exception) and type(exc).__module__.startswith(
            ("kombu", "amqp", "redis")
        ):
            return PublishError(f"Could not publish task {task!r} to {where}: {exc!r}")
        return None

    def close(self) -> None:
        self._lanes.close()


def _interval(policy: dict[str, Any], attempt: int) -> float:
    """Seconds to wait before retry ``attempt + 1``, as kombu's ``ensure`` counts them."""
    start = float(policy.get("interval_start") or 0)
    step = float(policy.get("interval_step") or 0)
    most = float(policy.get("interval_max") or 0)
    return min(start + step * attempt, most) if most else start + step * attempt


def _frozen(policy: dict[str, Any] | None) -> Any:
    return tuple(sorted(policy.items())) if policy else None


def _declared_queues() -> list[Any]:
    from ..routing import declared_queues

    return declared_queues()


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
