"""Publishing lanes: a broker connection and channel, reused from one send to the next.

kombu's ``Producer.publish`` redoes on every call what a task queue's producer
already knows: the entities, the serializer, the retry wrapper, and for virtual
transports a lookup of the exchange's binding table (on Redis, a round trip per
message).  A :class:`Lane` keeps one connection and channel open and sends through
the transport's own primitives:

* virtual transports (``django://``, ``memory://``): the message kombu's
  ``prepare_message`` would build, handed to the channel's ``_put`` for the queue,
  as kombu's direct exchange does after its lookup;
* our ``redis://`` transport: the same message, written by a
  :class:`~.redis_writer.RedisWriter` exactly as the channel's ``_put`` writes it;
* ``amqp://`` (and any other transport): ``prepare_message`` and ``basic_publish``
  on the channel, which writes the frames without waiting for the broker.

A message with an explicit ``exchange``, or a routing key other than its queue's
name, takes kombu's full ``basic_publish`` with its exchange lookup.  A lane is used
by one thread at a time; :class:`LanePool` lends them out.
"""

from __future__ import annotations

import base64
import sys
import threading
from dataclasses import dataclass
from typing import Any

from kombu.common import maybe_declare
from kombu.exceptions import OperationalError
from kombu.transport import virtual

from ..message import EncodedMessage, new_id
from .connection import broker_connection

#: messages per Redis pipeline in a bulk send
PIPELINE_CHUNK = 1000


@dataclass
class Route:
    """Where messages for one queue go: the kombu Queue (and direct exchange) to declare."""

    queue: str
    entity: Any
    declared: bool = False


@dataclass
class Outgoing:
    """One message to send, with everything a lane needs."""

    encoded: EncodedMessage
    route: Route
    exchange: str | None
    routing_key: str | None
    priority: int | None
    delivery_mode: int

    @property
    def plain(self) -> bool:
        """Routed by its queue's own exchange and name: no binding lookup needed."""
        return self.exchange is None and (self.routing_key or self.route.queue) == self.route.queue


class Lane:
    """One broker connection and its channel (and for Redis, a writer)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.connection: Any = broker_connection(url)
        #: errors after which the connection is rebuilt and the send retried
        self.errors: tuple[type[BaseException], ...] = (
            *self.connection.connection_errors,
            OperationalError,
        )
        self.channel: Any = None
        self.kind = ""
        self.writer: Any = None
        self._stock = False  # kombu's own prepare_message/augment: build the dict inline

    def open(self) -> Any:
        if self.channel is None:
            if self.connection is None:
                self.connection = broker_connection(self.url)
            self.connection.connect()
            channel = self.connection.channel()
            self.channel, self.kind = channel, _kind_of(channel)
            cls = type(channel)
            self._stock = (
                cls.prepare_message is virtual.Channel.prepare_message
                and cls._inplace_augment_message is virtual.Channel._inplace_augment_message
                and cls.encode_body is virtual.Channel.encode_body
            ) if self.kind != "other" else False  # fmt: skip
            if self.kind == "redis":
                from .redis_writer import RedisWriter

                self.writer = RedisWriter(channel)
        return self.channel

    def reset(self) -> None:
        """Drop the connection (after an error); the next ``open`` makes a new one."""
        writer, self.writer = self.writer, None
        if writer is not None:
            _quietly(writer.close)
        channel, self.channel = self.channel, None
        if channel is not None:
            _quietly(channel.close)
        connection, self.connection = self.connection, None
        if connection is not None:
            _quietly(connection.release)

    close = reset

    # -- sending ------------------------------------------------------------------------
    def declare(self, route: Route) -> None:
        maybe_declare(route.entity, self.open())

    def send(self, item: Outgoing) -> None:
        channel = self.channel or self.open()
        if self.kind == "other" or not item.plain:
            self._basic_publish(item)
            return
        queue = item.route.queue
        message = self._envelope(item, queue)
        writer = self.writer
        if writer is not None and writer.takes(message, queue):
            writer.publish_one(writer.args(message, queue))
        else:
            channel._put(queue, message)

    def send_many(self, items: list[Outgoing]) -> None:
        """Send ``items`` in order: pipelined on Redis, in one transaction on ``django://``."""
        channel = self.channel or self.open()
        if self.kind == "database":
            from django.db import transaction

            with transaction.atomic(using=channel.alias):
                for item in items:
                    self.send(item)
            return
        writer = self.writer
        if writer is None:
            for item in items:
                self.send(item)
            return
        batch: list[tuple[str, str, str]] = []
        for item in items:
            queue = item.route.queue
            message = self._envelope(item, queue) if item.plain else None
            if message is not None and writer.takes(message, queue):
                batch.append(writer.args(message, queue))
                if len(batch) >= PIPELINE_CHUNK:
                    writer.publish(batch)
                    batch = []
                continue
            writer.publish(batch)  # keep the order
            batch = []
            if message is None:
                self._basic_publish(item)
            else:
                channel._put(queue, message)
        writer.publish(batch)

    def _basic_publish(self, item: Outgoing) -> None:
        """kombu's publish path: the channel routes by exchange and routing key."""
        encoded = item.encoded
        body, content_encoding = _body(encoded)
        properties = {k: v for k, v in encoded.properties.items() if k != "priority"}
        properties["delivery_mode"] = item.delivery_mode
        message = self.channel.prepare_message(
            body, item.priority, encoded.content_type, content_encoding, encoded.headers, properties
        )
        queue = item.route.queue
        self.channel.basic_publish(
            message,
            exchange=queue if item.exchange is None else item.exchange,
            routing_key=item.routing_key or queue,
        )

    def _envelope(self, item: Outgoing, queue: str) -> dict[str, Any]:
        """What kombu's ``prepare_message`` and ``basic_publish`` make for a virtual channel."""
        channel = self.channel
        encoded = item.encoded
        body, content_encoding = _body(encoded)
        properties = {k: v for k, v in encoded.properties.items() if k != "priority"}
        properties["delivery_mode"] = item.delivery_mode
        if not self._stock:
            message = channel.prepare_message(
                body, item.priority, encoded.content_type, content_encoding, encoded.headers,
                properties,
            )  # fmt: skip
            channel._inplace_augment_message(message, queue, queue)
            return message
        properties["delivery_info"] = {"exchange": queue, "routing_key": queue}
        properties["priority"] = item.priority or channel.default_priority
        body_encoding = channel.body_encoding
        if body_encoding == "base64":
            body = base64.b64encode(body).decode()
        else:
            body, body_encoding = channel.encode_body(body, body_encoding)
        properties["body_encoding"] = body_encoding
        properties["delivery_tag"] = new_id()
        return {
            "body": body,
            "content-encoding": content_encoding,
            "content-type": encoded.content_type,
            "headers": encoded.headers or {},
            "properties": properties,
        }


def _body(encoded: EncodedMessage) -> tuple[Any, str]:
    """Body bytes and content encoding, as kombu's ``Producer._prepare`` makes them."""
    body, content_encoding = encoded.body, encoded.content_encoding
    if isinstance(body, str):
        content_encoding = content_encoding or "utf-8"
        return body.encode(content_encoding), content_encoding
    return body, content_encoding or "binary"


def _kind_of(channel: Any) -> str:
    ours = sys.modules.get("django_tasks_q.messaging.redis.channel")  # loaded if in use
    if ours is not None and isinstance(channel, ours.Channel):
        return "redis"
    if isinstance(channel, virtual.Channel):
        database = type(channel).__module__ == "django_tasks_q.messaging.database_channel"
        return "database" if database else "virtual"
    return "other"  # py-amqp and any other kombu transport


def _quietly(fn: Any) -> None:
    try:
        fn()
    except Exception:  # closing a dead connection must not hide the error being handled
        pass


class LanePool:
    """Up to ``limit`` lanes (0 or None: no limit), each lent to one thread at a time."""

    def __init__(self, url: str, limit: int | None) -> None:
        self.url = url
        self.limit = limit or 0
        self._idle: list[Lane] = []
        self._count = 0
        self._cond = threading.Condition(threading.Lock())

    def acquire(self) -> Lane:
        with self._cond:
            while not self._idle and self.limit and self._count >= self.limit:
                self._cond.wait()
            if self._idle:
                return self._idle.pop()
            self._count += 1
        try:
            return Lane(self.url)
        except BaseException:
            with self._cond:
                self._count -= 1
                self._cond.notify()
            raise

    def release(self, lane: Lane) -> None:
        with self._cond:
            self._idle.append(lane)
            self._cond.notify()

    def close(self) -> None:
        with self._cond:
            idle, self._idle = self._idle, []
        for lane in idle:
            lane.close()
