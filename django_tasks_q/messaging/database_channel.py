"""The ``django://`` channel: kombu's virtual channel over ``QueueMessage`` rows.

Publishing, claiming and handing out rows, queue declaration and bindings,
fanout reads. Acks live in ``database_qos``, statements in ``database_sql``.
"""

from __future__ import annotations

import logging
from collections import deque
from queue import Empty
from typing import TYPE_CHECKING, Any

from django.db import DatabaseError, transaction
from kombu.transport import virtual

from .database_conn import own_connection
from .database_fanout import FanoutReader
from .database_payload import ROW_KEY, to_delivery, to_row
from .database_qos import PendingDeletes, QoS
from .database_sql import (
    Row,
    claim,
    delete_owned,
    delete_queue_rows,
    has_rows,
    insert_broadcast,
    insert_message,
    purge_unreserved,
    ready_count,
    release_owned,
)

if TYPE_CHECKING:
    from .database import Transport

logger = logging.getLogger("django_tasks_q.messaging.database")


class Channel(virtual.Channel):
    QoS = QoS
    supports_fanout = True
    #: Text bodies are stored as text; binary ones are base64-encoded per message.
    body_encoding = "utf-8"

    def __init__(self, connection: Transport, **kwargs: Any) -> None:
        super().__init__(connection, **kwargs)
        self.alias = connection.alias
        self._buffers: dict[str, deque[Row]] = {}  # claimed, not yet handed out
        self._no_ack_queues: set[str] = set()
        self.pending = PendingDeletes(connection)  # deferred acks, no-ack deliveries
        self._temporary: set[str] = set()  # exclusive/auto-delete queues we declared
        self._fanout = FanoutReader(self.alias)

    # -- publish --------------------------------------------------------------
    def _put(self, queue: str, message: dict[str, Any], **kwargs: Any) -> None:
        payload, visible_at, task_id = to_row(message)
        priority = self._get_message_priority(message)
        insert_message(self.alias, queue, payload, priority, visible_at, task_id)

    def _put_fanout(
        self, exchange: str, message: dict[str, Any], routing_key: str, **kwargs: Any
    ) -> None:
        payload, _, _ = to_row(message)
        insert_broadcast(self.alias, exchange, routing_key, payload)

    # -- consume --------------------------------------------------------------
    def _get(
        self, queue: str, timeout: float | None = None, batch: int | None = None
    ) -> dict[str, Any]:
        transport = self.connection
        transport.before_claim()
        if queue in self._fanout:
            payload = self._fanout.get(queue)
            if payload is not None:
                return to_delivery(payload, None, 1)
        buffer = self._buffers.get(queue)
        if not buffer:
            self.pending.flush()
            rows = claim(self.alias, queue, transport.owner, batch or self._claim_size())
            if not rows:
                raise Empty()
            buffer = self._buffers[queue] = deque(rows)
        row = buffer.popleft()
        if queue in self._no_ack_queues:
            self.pending.add(row.id)
        return to_delivery(row.payload, row.id, row.delivery_count)

    def _claim_size(self, freed: int = 0) -> int:
        batch = self.connection.claim_batch
        room = self.qos.can_consume_max_estimate()
        return batch if room is None else max(1, min(batch, room + freed))

    def claim_ahead(self, freed: int) -> int:
        """Claim the next batch of the queue polled next, in the caller's transaction.

        For a consumer that acks a batch in a transaction and then polls again: the
        claim commits with the acks (one commit instead of two), and the rows are
        handed out by the next poll once that transaction committed (on rollback
        they were never ours). ``freed``: deliveries those acks will settle.
        Returns the number of rows claimed.
        """
        queues = self._active_queues
        if not queues or any(q in self._fanout for q in queues):
            return 0  # fanout reads come first in _get; keep their order
        queue = queues[getattr(self._cycle, "pos", 0) % len(queues)]
        if self._buffers.get(queue):
            return 0
        self.connection.before_claim()
        rows = claim(self.alias, queue, self.connection.owner, self._claim_size(freed))
        if rows:
            transaction.on_commit(
                lambda: self._buffers.setdefault(queue, deque()).extend(rows), using=self.alias
            )
        return len(rows)

    def basic_consume(
        self, queue: str, no_ack: bool, callback: Any, consumer_tag: str, **kwargs: Any
    ) -> Any:
        if no_ack:
            self._no_ack_queues.add(queue)
        return super().basic_consume(queue, no_ack, callback, consumer_tag, **kwargs)

    def basic_cancel(self, consumer_tag: str) -> Any:
        queue = self._tag_to_queue.get(consumer_tag)
        result = super().basic_cancel(consumer_tag)
        if queue is not None and queue not in self._active_queues:
            self._no_ack_queues.discard(queue)
            self._release_buffer(queue)
        return result

    def basic_get(self, queue: str, no_ack: bool = False, **kwargs: Any) -> Any:
        try:
            with own_connection(self.alias):
                raw = self._get(queue, batch=1)  # one message, as on AMQP: hold no others back
        except Empty:
            return None
        message = self.Message(raw, channel=self)
        row = message.delivery_info.get(ROW_KEY)
        if no_ack:
            if row is not None and queue not in self._no_ack_queues:
                self.pending.add(row)
        else:
            self.qos.append(message, message.delivery_tag)
        return message

    def _release_buffer(self, queue: str) -> None:
        buffer = self._buffers.pop(queue, None)
        if buffer:
            release_owned(
                self.alias, [row.id for row in buffer], self.connection.owner, undelivered=True
            )

    # -- queues and bindings ----------------------------------------------------
    def _new_queue(self, queue: str, **kwargs: Any) -> None:
        self.connection.bindings.declare_queue(queue)
        if kwargs.get("exclusive") or kwargs.get("auto_delete"):
            self._temporary.add(queue)

    def _has_queue(self, queue: str, **kwargs: Any) -> bool:
        return self.connection.bindings.has_queue(queue) or has_rows(self.alias, queue)

    def _size(self, queue: str) -> int:
        return ready_count(self.alias, queue)

    def _purge(self, queue: str) -> int:
        count = purge_unreserved(self.alias, queue)
        buffer = self._buffers.pop(queue, None)
        if buffer:  # claimed but never handed out: still "in the queue" for the caller
            count += delete_owned(self.alias, [row.id for row in buffer], self.connection.owner)
        return count

    def _delete(self, queue: str, *args: Any, **kwargs: Any) -> None:
        self._buffers.pop(queue, None)
        self._fanout.unbind(queue)
        self._temporary.discard(queue)
        delete_queue_rows(self.alias, queue)
        self.connection.bindings.delete_queue(queue)

    def queue_delete(
        self, queue: str, if_unused: bool = False, if_empty: bool = False, **kwargs: Any
    ) -> int | None:
        if if_empty and self._size(queue):
            return None
        size = self._size(queue)
        self._delete(queue)
        for exchange, _routing_key, _args in list(self.state.queue_bindings(queue)):
            table = self.state.exchanges.get(exchange, {}).get("table", [])
            table[:] = [meta for meta in table if meta[2] != queue]
        self.state.queue_bindings_delete(queue)
        return size

    def exchange_delete(self, exchange: str, if_unused: bool = False, nowait: bool = False) -> None:
        """Remove the exchange and its bindings (queues stay, as on AMQP)."""
        self.connection.bindings.delete_exchange(exchange)
        self.state.exchanges.pop(exchange, None)

    def _queue_bind(self, exchange: str, routing_key: str, pattern: Any, queue: str) -> None:
        kind = self.state.exchanges[exchange]["type"]
        self.connection.bindings.bind(queue, exchange, routing_key, kind)
        if kind == "fanout":
            self._fanout.bind(queue, exchange)

    def queue_unbind(
        self,
        queue: str,
        exchange: str | None = None,
        routing_key: str = "",
        arguments: Any = None,
        **kwargs: Any,
    ) -> None:
        super().queue_unbind(queue, exchange, routing_key, arguments, **kwargs)
        self.connection.bindings.unbind(queue, exchange or "", routing_key)
        self._fanout.unbind(queue)

    def typeof(self, exchange: str, default: str = "direct") -> Any:
        if exchange in self.state.exchanges:
            return super().typeof(exchange, default)
        return self.exchange_types[self.connection.bindings.exchange_type(exchange) or default]

    def _lookup(self, exchange: str, routing_key: str, default: str | None = None) -> list[str]:
        """Queues bound to ``exchange`` for ``routing_key``, by this or any process."""
        if not exchange:  # the default exchange: the routing key names the queue
            return [routing_key or default or self.deadletter_queue]
        kind = self.typeof(exchange)
        for refresh in (False, True):
            table = self._table(exchange, kind, refresh)
            found = kind.lookup(table, exchange, routing_key, None)
            if found:
                return list(found)
        fallback = default or self.deadletter_queue
        if fallback:
            return [fallback]
        logger.warning(
            "Message to exchange %r with routing key %r matched no queue and was dropped. "
            "Declare the queue first (Queue(...).declare() or Producer.publish(declare=[queue])).",
            exchange,
            routing_key,
        )
        return []

    def _table(self, exchange: str, kind: Any, refresh: bool) -> list[tuple]:
        local = self.state.exchanges.get(exchange, {}).get("table", [])
        shared = [
            kind.prepare_bind(queue, exchange, rk, None)
            for rk, queue in self.connection.bindings.table(exchange, refresh)
        ]
        return list(dict.fromkeys([*local, *shared]))

    # -- lifecycle --------------------------------------------------------------
    def consumed_queues(self) -> set[str]:
        return set(self._active_queues)

    def fanout_exchanges(self) -> set[str]:
        return self._fanout.exchanges()

    def close(self) -> None:
        if not self.closed and self.connection is not None:
            try:
                with own_connection(self.alias):
                    self._settle_on_close()
            except DatabaseError:
                logger.warning(
                    "Could not release reserved messages on close; they return to their "
                    "queue once this consumer's heartbeat expires.",
                    exc_info=True,
                )
        super().close()

    def _settle_on_close(self) -> None:
        self.pending.flush()
        for queue in list(self._buffers):
            self._release_buffer(queue)
        for queue in list(self._temporary):
            self._delete(queue)

    def forget_parent_state(self) -> None:
        """After fork: the rows this channel holds are the parent's, not ours."""
        self._buffers.clear()
        self.pending.forget()
        if self._qos is not None:
            self._qos.forget()
