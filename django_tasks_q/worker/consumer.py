"""One process's broker connection: consuming, prefetch, acks and re-publishing.

Each consuming process owns one kombu connection and one channel, with one kombu
``Consumer`` per queue so every message arrives knowing its queue. Prefetch is
the channel's QoS. Messages are handed raw (undecoded) to ``on_message``; the
worker decodes them itself so a bad message is reported, not raised.

Not thread-safe: the engine serialises calls with its lock.
"""

from __future__ import annotations

import logging
import select
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import Any

from kombu import Consumer, Exchange, Producer, Queue

from ..messaging.connection import broker_connection, mask_url

logger = logging.getLogger("django_tasks_q.worker")

#: headers a transport adds on delivery; never copied into a re-published message
DELIVERY_HEADERS = (
    "x-delivery-count",
    "x-death",
    "x-first-death-exchange",
    "x-first-death-queue",
    "x-first-death-reason",
)


def queue_entities(name: str) -> tuple[Exchange, Queue]:
    """The exchange and queue for ``name``, declared exactly as the publisher declares them."""
    from ..routing import declared_queues

    max_priority = next((q.max_priority for q in declared_queues() if q.name == name), None)
    exchange = Exchange(name, type="direct", durable=True)
    arguments = {"x-max-priority": max_priority} if max_priority else None
    return exchange, Queue(
        name, exchange, routing_key=name, durable=True, queue_arguments=arguments
    )


class BrokerConsumer:
    """Consume ``queues`` from ``url`` with ``prefetch`` unacknowledged messages at most."""

    def __init__(
        self,
        url: str,
        queues: list[str],
        prefetch: int,
        on_message: Callable[[str, Any], None],
    ) -> None:
        self.url = url
        self.queues = list(dict.fromkeys(queues))
        self.prefetch = prefetch
        self.on_message = on_message
        self.connection: Any = None
        self.channel: Any = None
        self._consumers: dict[str, Consumer] = {}
        self._producer: Producer | None = None
        self.paused = False

    # -- lifecycle ---------------------------------------------------------------------
    def connect(self, max_retries: int | None = None) -> None:
        def errback(exc: Exception, interval: float) -> None:
            logger.error(
                "Cannot connect to broker %s: %s. Retrying in %.1fs.",
                mask_url(self.url),
                exc,
                interval,
            )

        self.connection = broker_connection(self.url)
        self.connection.ensure_connection(
            errback=errback, max_retries=max_retries, interval_start=0.5, interval_step=1.0,
            interval_max=5.0,
        )  # fmt: skip
        self.channel = self.connection.channel()
        self._producer = None
        self._consumers = {}
        self.set_prefetch(self.prefetch)
        for queue in self.queues:
            self._start(queue)
        self.paused = False

    @property
    def errors(self) -> tuple[type[BaseException], ...]:
        """Exceptions meaning the connection or channel is gone."""
        if self.connection is None:
            return (OSError,)
        return (
            tuple(self.connection.connection_errors)
            + tuple(self.connection.channel_errors)
            + (OSError, ConnectionError)
        )

    def close(self) -> None:
        connection, self.connection = self.connection, None
        if connection is None:
            return
        try:
            for consumer in self._consumers.values():
                try:
                    consumer.cancel()
                except Exception:  # already gone
                    pass
            connection.release()
        except Exception as exc:
            logger.debug("Closing the broker connection raised %r", exc)
        self._consumers = {}

    # -- consuming ---------------------------------------------------------------------
    def _start(self, queue: str) -> None:
        _, kq = queue_entities(queue)
        consumer = Consumer(
            self.channel,
            [kq],
            on_message=partial(self.on_message, queue),
            no_ack=False,
            auto_declare=True,
        )
        if not self.paused:
            consumer.consume()
        self._consumers[queue] = consumer

    def add_queue(self, queue: str) -> bool:
        if queue in self._consumers:
            return False
        self.queues.append(queue)
        self._start(queue)
        return True

    def cancel_queue(self, queue: str) -> bool:
        consumer = self._consumers.pop(queue, None)
        if consumer is None:
            return False
        self.queues.remove(queue)
        consumer.cancel()
        return True

    def pause(self) -> None:
        """Stop receiving (messages already received stay ours until acked or requeued)."""
        if self.paused:
            return
        for consumer in self._consumers.values():
            consumer.cancel()
        self.paused = True

    def resume(self) -> None:
        if not self.paused:
            return
        for consumer in self._consumers.values():
            consumer.consume()
        self.paused = False

    def set_prefetch(self, count: int) -> None:
        self.channel.basic_qos(0, max(0, int(count)), False)

    def drain(self, timeout: float) -> bool:
        """Deliver waiting messages to ``on_message``; False when ``timeout`` passed first."""
        try:
            self.connection.drain_events(timeout=max(timeout, 0.001))
            return True
        except TimeoutError:
            return False

    def has_waiting(self) -> bool:
        """Whether a drain now would deliver at once, without another round trip or a wait.

        Our Redis channel: messages left in its claim buffer (the claim took all there
        was); ``django://``: rows claimed and not yet handed out. AMQP: the socket is
        readable. Other transports: assume so.
        """
        channel = self.channel
        buffered = getattr(channel, "_buffer", None)
        if isinstance(buffered, deque):
            return bool(buffered)
        buffers = getattr(channel, "_buffers", None)  # django://: claimed rows per queue
        if isinstance(buffers, dict):
            return any(buffers.values())
        sock = getattr(getattr(self.connection.connection, "transport", None), "sock", None)
        if sock is None:
            return True
        try:
            return bool(select.select([sock], [], [], 0)[0])
        except (OSError, ValueError):
            return True

    def message_count(self, queue: str) -> int:
        _, kq = queue_entities(queue)
        try:
            result = kq.bind(self.channel).queue_declare(passive=True)
        except tuple(self.connection.channel_errors):
            return 0  # no such queue (virtual transports drop empty ones): nothing waits
        return int(getattr(result, "message_count", 0) or 0)

    def purge(self) -> int:
        total = 0
        for queue in self.queues:
            _, kq = queue_entities(queue)
            total += kq.bind(self.channel).purge() or 0
        return total

    # -- acks and re-publishing --------------------------------------------------------------
    @staticmethod
    def ack(raw: Any) -> None:
        if not raw.acknowledged:
            raw.ack()

    def ack_many(self, raws: list[Any], claim_next: bool = False) -> None:
        """Ack several messages; on ``django://`` with one statement and one commit.

        On ``django://`` the rows are deleted in a transaction on the worker's own
        connection, or in the caller's transaction when there is one (``Engine.flush``
        commits a batch's results and its acks together); the messages count as
        acked once it commits, and stay unacked if it rolls back. ``claim_next``
        (the caller polls right after): the same transaction also claims the next
        batch, which the next poll hands out without a statement of its own.
        """
        raws = [raw for raw in raws if not raw.acknowledged]
        alias = self.transaction_alias
        if alias is None or not raws:
            for raw in raws:
                self.ack(raw)
            return
        from django.db import transaction

        from ..messaging.database_conn import own_connection

        with own_connection(alias), transaction.atomic(using=alias, savepoint=False):
            by_channel: dict[int, list[Any]] = {}
            for raw in raws:
                by_channel.setdefault(id(raw.channel), []).append(raw)
            for group in by_channel.values():
                group[0].channel.qos.delete_acked([raw.delivery_tag for raw in group])
            transaction.on_commit(partial(self._ack_all, raws), using=alias)
            if claim_next and not self.paused and self.channel is not None:
                freed = sum(1 for raw in raws if raw.channel is self.channel)
                self.channel.claim_ahead(freed)

    def _ack_all(self, raws: list[Any]) -> None:
        for raw in raws:
            self.ack(raw)  # the rows are gone: this only settles the tags in kombu

    @property
    def transaction_alias(self) -> str | None:
        """The database alias of a ``django://`` connection (its acks are statements)."""
        transport = getattr(self.connection, "transport", None)
        return (
            getattr(transport, "alias", None)
            if getattr(transport, "driver_type", "") == "django"
            else None
        )

    @staticmethod
    def requeue(raw: Any) -> None:
        if not raw.acknowledged:
            raw.reject(requeue=True)

    def republish(self, raw: Any, queue: str) -> None:
        """Publish a copy of ``raw`` to ``queue`` (same id, headers and body).

        Used to give held messages back without counting a delivery, and to move
        a far ETA into the durable delayed store of ``django://`` and ``redis://``
        (their transports hold a message with a far ``eta`` header back).
        """
        if self._producer is None:
            self._producer = Producer(self.channel)
        exchange, kq = queue_entities(queue)
        headers = {k: v for k, v in (raw.headers or {}).items() if k not in DELIVERY_HEADERS}
        properties = raw.properties or {}
        extra = {
            k: properties[k]
            for k in ("correlation_id", "reply_to", "priority")
            if properties.get(k) is not None
        }
        self._producer.publish(
            raw.body,
            exchange=exchange,
            routing_key=queue,
            headers=headers,
            content_type=raw.content_type,
            content_encoding=raw.content_encoding,
            delivery_mode=2,
            declare=[kq],
            retry=True,
            **extra,
        )
