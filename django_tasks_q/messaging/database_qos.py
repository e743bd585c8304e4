"""Acks on ``django://``: kombu delivery tags mapped to reserved rows.

* ack deletes the row;
* reject with requeue releases it (``owner`` cleared: ready again, at its old place);
* reject without requeue deletes it;
* recover, and closing the channel, release every row still unacked.

With the transport option ``ack_batch`` above 1, acks are deferred and deleted
together (:class:`PendingDeletes`): before the next claim, when the consumer
goes idle, every ``ack_batch`` acks, within ``ACK_FLUSH_SECONDS``, and on close.
A crash in between redelivers those messages (at least once, never lost).
Rows handed to ``no_ack`` consumers are deleted the same way.

:meth:`QoS.delete_acked` deletes the rows of many tags in one statement inside
the caller's transaction (the worker commits a batch's results with it); the
tags count as acked only once that transaction committed.

Every statement names our owner id too, so a row whose reservation was taken
away (its owner was judged dead and another consumer claimed it) is left alone.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from django.db import transaction
from kombu.transport import virtual

from .database_conn import own_connection
from .database_payload import ROW_KEY
from .database_sql import delete_owned, release_owned

logger = logging.getLogger("django_tasks_q.messaging.database")


class QoS(virtual.QoS):
    def __init__(self, channel: Any, prefetch_count: int = 0) -> None:
        super().__init__(channel, prefetch_count)
        self._transport = channel.connection  # channel.connection is cleared on close
        self._rows: dict[str, int] = {}

    def append(self, message: Any, delivery_tag: str) -> None:
        row = (message.delivery_info or {}).get(ROW_KEY)
        if row is not None:
            self._rows[delivery_tag] = row
        super().append(message, delivery_tag)

    def ack(self, delivery_tag: str) -> None:
        self._settle(delivery_tag, requeue=False, verb="ack")

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:
        self._settle(delivery_tag, requeue=requeue, verb="reject")

    def _settle(self, delivery_tag: str, requeue: bool, verb: str) -> None:
        row = self._rows.get(delivery_tag)
        if row is not None and not requeue and self._transport.ack_batch > 1:
            self._rows.pop(delivery_tag, None)
            self.channel.pending.add(row)
        elif row is not None:
            action = release_owned if requeue else delete_owned
            # On a database error the tag stays unacked (released on close) and the caller sees it.
            with own_connection(self._transport.alias):
                done = action(self._transport.alias, [row], self._transport.owner)
            self._rows.pop(delivery_tag, None)
            if not done:
                _late(verb, [row], 1)
        self._quick_ack(delivery_tag)

    def delete_acked(self, delivery_tags: list[str]) -> None:
        """Delete the rows of ``delivery_tags`` in the caller's transaction (one statement).

        Must run inside ``transaction.atomic(using=alias)``. The rows are forgotten
        once it commits, so a later ``ack()`` of those tags only settles them in
        kombu; on rollback nothing changed and the tags are still unacked.
        """
        pairs = [(tag, self._rows[tag]) for tag in delivery_tags if tag in self._rows]
        if not pairs:
            return
        alias = self._transport.alias
        rows = [row for _, row in pairs]
        done = delete_owned(alias, rows, self._transport.owner)
        if done < len(rows):
            _late("ack", rows, len(rows) - done)

        def forget() -> None:
            for tag, _ in pairs:
                self._rows.pop(tag, None)

        transaction.on_commit(forget, using=alias)

    def restore_unacked(self) -> list:
        """Release every unacked row of this channel; returns [] (errors are raised)."""
        self._flush()
        tags = list(self._delivered)
        rows = [self._rows.pop(tag) for tag in tags if tag in self._rows]
        self._delivered.clear()
        if rows:
            with own_connection(self._transport.alias):
                release_owned(self._transport.alias, rows, self._transport.owner)
        return []

    def restore_unacked_once(self, stderr: Any = None) -> None:
        """On close: release unacked rows once; if the database is unreachable, leave them.

        Rows left reserved go back to the queue when our heartbeat expires, so
        nothing is lost (kombu's default would dump them to a file instead).
        """
        self._on_collect.cancel()
        if getattr(self._delivered, "restored", False):
            return
        try:
            if self.restore_at_shutdown and self.channel.do_restore:
                self.restore_unacked()
        except Exception:
            logger.warning(
                "Could not release unacked messages on close; they return to their queue "
                "once this consumer's heartbeat expires.",
                exc_info=True,
            )
        finally:
            self._delivered.restored = True

    def forget(self) -> None:
        """Drop all state without touching the database (after fork: the rows are the parent's)."""
        self._delivered.clear()
        self._dirty.clear()
        self._rows.clear()


def _late(verb: str, rows: list[int], missed: int) -> None:
    logger.warning(
        "%s of %d of message row(s) %s came after the reservation was released "
        "(this consumer's heartbeat was late, or the queue was deleted); "
        "the message(s) may be delivered again.",
        verb.capitalize(),
        missed,
        ", ".join(map(str, rows)),
    )


#: Deferred deletes older than this are flushed by the next drain_events call.
ACK_FLUSH_SECONDS = 1.0


class PendingDeletes:
    """Row ids to delete in one statement: deferred acks and no-ack deliveries.

    Acks may come from any thread; the flush runs on whichever thread triggers it,
    with that thread's connection.
    """

    def __init__(self, transport: Any) -> None:
        self._transport = transport
        self._ids: list[int] = []
        self._since: float | None = None
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, row_id: int) -> None:
        with self._lock:
            self._ids.append(row_id)
            self._since = self._since or time.monotonic()
            full = len(self._ids) >= max(self._transport.ack_batch, self._transport.claim_batch)
        if full:
            self.flush()

    def overdue(self) -> bool:
        since = self._since
        return since is not None and time.monotonic() - since >= ACK_FLUSH_SECONDS

    def flush(self) -> None:
        with self._lock:
            ids, self._ids, self._since = self._ids, [], None
        if not ids:
            return
        try:
            with own_connection(self._transport.alias):
                delete_owned(self._transport.alias, ids, self._transport.owner)
        except BaseException:
            with self._lock:  # keep them for the next flush
                self._ids[:0] = ids
                self._since = self._since or time.monotonic()
            raise

    def forget(self) -> None:
        with self._lock:
            self._ids, self._since = [], None
