"""The statements of the ``django://`` transport: publish, claim, ack and release rows.

Hot paths (publish, claim, ack, release) are one raw statement each, run on the
calling thread's Django connection for the configured alias. The claim has one
form per database family:

* PostgreSQL: ``WITH … FOR UPDATE SKIP LOCKED`` feeding ``UPDATE … RETURNING``;
* SQLite: ``UPDATE … RETURNING`` inside ``BEGIN IMMEDIATE`` (one writer at a
  time), retrying "database is locked";
* others (MariaDB, MySQL): ``SELECT … FOR UPDATE SKIP LOCKED`` then ``UPDATE`` in
  one short transaction.

On PostgreSQL, inserts and releases of ready rows also call ``pg_notify`` on
:data:`NOTIFY_CHANNEL` with the queue name, which fires when the caller commits.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from django.db import OperationalError, connections, transaction
from django.db.models import F
from django.utils import timezone

logger = logging.getLogger("django_tasks_q.messaging.database")

#: PostgreSQL NOTIFY channel; the payload is a queue name, ``fanout:<exchange>`` or ``*``.
NOTIFY_CHANNEL = "tasks_q"
#: How long a SQLite write keeps retrying "database is locked" before giving up.
SQLITE_LOCK_RETRY_SECONDS = 120.0

T = TypeVar("T")


@dataclass(frozen=True)
class Row:
    """A claimed queue row."""

    id: int
    payload: dict[str, Any]
    delivery_count: int


def now() -> datetime:
    return timezone.now()


def _models():
    from ..models import BroadcastMessage, QueueMessage

    return QueueMessage, BroadcastMessage


def _table(connection, model) -> str:
    return connection.ops.quote_name(model._meta.db_table)


def _when(connection, value: datetime) -> Any:
    return connection.ops.adapt_datetimefield_value(value)


def _json_param(connection, model, payload: dict[str, Any]) -> Any:
    return model._meta.get_field("payload").get_db_prep_save(payload, connection)


def _json_value(value: Any) -> dict[str, Any]:
    return json.loads(value) if isinstance(value, str | bytes) else value


def _is_locked(exc: BaseException) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def sqlite_retry(alias: str, attempt: Callable[[], T]) -> T:
    """Run ``attempt``; on SQLite outside a transaction, retry "database is locked".

    SQLite's busy timeout already waits for the write lock; this covers waits
    longer than that timeout under heavy contention, so no caller ever fails on it.
    Inside the caller's transaction the error is raised: only they can retry.
    """
    connection = connections[alias]
    if connection.vendor != "sqlite" or connection.in_atomic_block:
        return attempt()
    deadline = time.monotonic() + SQLITE_LOCK_RETRY_SECONDS
    delay = 0.005
    while True:
        try:
            return attempt()
        except OperationalError as exc:
            if not _is_locked(exc) or time.monotonic() > deadline:
                raise
            logger.debug("SQLite database is locked; retrying in %.3fs", delay)
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 0.25)


def _in_ids(ids: Iterable[int]) -> tuple[str, list[int]]:
    ids = list(ids)
    return ", ".join(["%s"] * len(ids)), ids


# -- publish ------------------------------------------------------------------
def insert_message(
    alias: str,
    queue: str,
    payload: dict[str, Any],
    priority: int,
    visible_at: datetime,
    task_id: str | None,
) -> None:
    """Insert one ready (or delayed) row in the caller's connection and transaction."""
    QueueMessage, _ = _models()
    connection = connections[alias]
    created = now()
    sql = (
        f"INSERT INTO {_table(connection, QueueMessage)} "
        "(queue, payload, priority, visible_at, created_at, delivery_count, task_id) "
        "VALUES (%s, %s, %s, %s, %s, 0, %s)"
    )
    params: list[Any] = [
        queue,
        _json_param(connection, QueueMessage, payload),
        priority,
        _when(connection, visible_at),
        _when(connection, created),
        task_id,
    ]
    if connection.vendor == "postgresql" and visible_at <= created:
        sql += " RETURNING pg_notify(%s, %s)"
        params += [NOTIFY_CHANNEL, queue]

    def attempt() -> None:
        with connection.cursor() as cursor:
            cursor.execute(sql, params)

    sqlite_retry(alias, attempt)


def insert_broadcast(alias: str, exchange: str, routing_key: str, payload: dict[str, Any]) -> None:
    """Insert one fanout row; every queue bound to ``exchange`` will read it."""
    _, BroadcastMessage = _models()
    connection = connections[alias]
    sql = (
        f"INSERT INTO {_table(connection, BroadcastMessage)} "
        "(exchange, routing_key, payload, created_at) VALUES (%s, %s, %s, %s)"
    )
    params: list[Any] = [
        exchange,
        routing_key or "",
        _json_param(connection, BroadcastMessage, payload),
        _when(connection, now()),
    ]
    if connection.vendor == "postgresql":
        sql += " RETURNING pg_notify(%s, %s)"
        params += [NOTIFY_CHANNEL, f"fanout:{exchange}"]

    def attempt() -> None:
        with connection.cursor() as cursor:
            cursor.execute(sql, params)

    sqlite_retry(alias, attempt)


def notify_all(alias: str) -> None:
    """Wake every listening consumer (PostgreSQL only; a no-op elsewhere)."""
    connection = connections[alias]
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_notify(%s, %s)", [NOTIFY_CHANNEL, "*"])


# -- claim --------------------------------------------------------------------
_PG_CLAIM = """
WITH candidates AS MATERIALIZED (
    SELECT id FROM {t}
    WHERE queue = %s AND owner IS NULL AND visible_at <= %s
    ORDER BY priority DESC, visible_at, id
    LIMIT %s
    FOR UPDATE SKIP LOCKED
)
UPDATE {t} AS m
SET owner = %s, reserved_at = %s, delivery_count = m.delivery_count + 1
FROM candidates WHERE m.id = candidates.id
RETURNING m.id, m.payload, m.delivery_count, m.priority, m.visible_at
"""

_SQLITE_CLAIM = """
UPDATE {t}
SET owner = %s, reserved_at = %s, delivery_count = delivery_count + 1
WHERE id IN (
    SELECT id FROM {t}
    WHERE queue = %s AND owner IS NULL AND visible_at <= %s
    ORDER BY priority DESC, visible_at, id
    LIMIT %s
)
RETURNING id, payload, delivery_count, priority, visible_at
"""

_SQLITE_ANY_READY = (
    "SELECT 1 FROM {t} WHERE queue = %s AND owner IS NULL AND visible_at <= %s LIMIT 1"
)


def claim(alias: str, queue: str, owner: str, limit: int) -> list[Row]:
    """Reserve up to ``limit`` ready rows of ``queue`` for ``owner``, in delivery order.

    Order: priority descending, then ``visible_at``, then id. Each row's
    ``delivery_count`` is incremented.
    """
    connection = connections[alias]
    if connection.vendor == "postgresql":
        raw = _claim_postgresql(connection, queue, owner, limit)
    elif connection.vendor == "sqlite":
        raw = sqlite_retry(alias, lambda: _claim_sqlite(connection, queue, owner, limit))
    else:
        raw = _claim_generic(alias, queue, owner, limit)
    raw.sort(key=lambda r: (-r[3], r[4], r[0]))
    return [Row(id=r[0], payload=_json_value(r[1]), delivery_count=r[2]) for r in raw]


def _claim_postgresql(connection, queue: str, owner: str, limit: int) -> list[tuple]:
    QueueMessage, _ = _models()
    stamp = _when(connection, now())
    with connection.cursor() as cursor:
        cursor.execute(
            _PG_CLAIM.format(t=_table(connection, QueueMessage)),
            [queue, stamp, limit, owner, stamp],
        )
        return list(cursor.fetchall())


def _claim_sqlite(connection, queue: str, owner: str, limit: int) -> list[tuple]:
    QueueMessage, _ = _models()
    stamp = _when(connection, now())
    sql = _SQLITE_CLAIM.format(t=_table(connection, QueueMessage))
    params = [owner, stamp, queue, stamp, limit]
    with connection.cursor() as cursor:
        if connection.in_atomic_block or not connection.get_autocommit():
            cursor.execute(sql, params)  # the caller's transaction holds the write lock
            return list(cursor.fetchall())
        # An idle consumer must not take the single write lock just to find nothing.
        cursor.execute(_SQLITE_ANY_READY.format(t=_table(connection, QueueMessage)), [queue, stamp])
        if cursor.fetchone() is None:
            return []
        # BEGIN IMMEDIATE takes the write lock first (waiting on the busy timeout),
        # so the read inside the UPDATE can never be overtaken by another writer.
        cursor.execute("BEGIN IMMEDIATE")
        try:
            cursor.execute(sql, params)
            rows = list(cursor.fetchall())
            cursor.execute("COMMIT")
        except BaseException:
            _sqlite_rollback(connection, cursor)
            raise
        return rows


def _sqlite_rollback(connection, cursor) -> None:
    try:
        if connection.connection is not None and connection.connection.in_transaction:
            cursor.execute("ROLLBACK")
    except Exception:  # the original error matters more
        logger.debug("ROLLBACK after a failed claim failed too", exc_info=True)


def _claim_generic(alias: str, queue: str, owner: str, limit: int) -> list[tuple]:
    QueueMessage, _ = _models()
    connection = connections[alias]
    stamp = now()
    skip_locked = connection.features.has_select_for_update_skip_locked
    manager = QueueMessage._base_manager.using(alias)
    with transaction.atomic(using=alias):
        rows = list(
            manager.select_for_update(skip_locked=skip_locked)
            .filter(queue=queue, owner__isnull=True, visible_at__lte=stamp)
            .order_by("-priority", "visible_at", "id")
            .values_list("id", "payload", "delivery_count", "priority", "visible_at")[:limit]
        )
        if rows:
            manager.filter(id__in=[r[0] for r in rows]).update(
                owner=owner, reserved_at=stamp, delivery_count=F("delivery_count") + 1
            )
    return [(r[0], r[1], r[2] + 1, r[3], r[4]) for r in rows]


# -- ack, reject, release -------------------------------------------------------
def delete_owned(alias: str, ids: Iterable[int], owner: str) -> int:
    """Delete rows still reserved by ``owner`` (ack, or reject without requeue)."""
    QueueMessage, _ = _models()
    placeholders, params = _in_ids(ids)
    if not params:
        return 0
    connection = connections[alias]
    sql = (
        f"DELETE FROM {_table(connection, QueueMessage)} "
        f"WHERE id IN ({placeholders}) AND owner = %s"
    )

    def attempt() -> int:
        with connection.cursor() as cursor:
            cursor.execute(sql, [*params, owner])
            return cursor.rowcount

    return sqlite_retry(alias, attempt)


def release_owned(alias: str, ids: Iterable[int], owner: str, undelivered: bool = False) -> int:
    """Make rows still reserved by ``owner`` ready again (reject with requeue, close).

    ``undelivered``: the rows were claimed but never handed to the application,
    so their claim does not count as a delivery.
    """
    QueueMessage, _ = _models()
    placeholders, params = _in_ids(ids)
    if not params:
        return 0
    connection = connections[alias]
    uncount = ", delivery_count = delivery_count - 1" if undelivered else ""
    sql = (
        f"UPDATE {_table(connection, QueueMessage)} SET owner = NULL, reserved_at = NULL{uncount} "
        f"WHERE id IN ({placeholders}) AND owner = %s"
    )
    args: list[Any] = [*params, owner]
    if connection.vendor == "postgresql":
        sql += " RETURNING pg_notify(%s, queue)"
        args.append(NOTIFY_CHANNEL)

    def attempt() -> int:
        with connection.cursor() as cursor:
            cursor.execute(sql, args)
            return cursor.rowcount

    return sqlite_retry(alias, attempt)


# -- queue-wide ---------------------------------------------------------------
def ready_count(alias: str, queue: str) -> int:
    """Messages of ``queue`` ready to be delivered now (not reserved, not delayed)."""
    QueueMessage, _ = _models()
    return (
        QueueMessage._base_manager.using(alias)
        .filter(queue=queue, owner__isnull=True, visible_at__lte=now())
        .count()
    )


def purge_unreserved(alias: str, queue: str) -> int:
    """Delete every unreserved row of ``queue`` (ready and delayed)."""
    QueueMessage, _ = _models()
    return sqlite_retry(
        alias,
        lambda: (
            QueueMessage._base_manager.using(alias)
            .filter(queue=queue, owner__isnull=True)
            .delete()[0]
        ),
    )


def delete_queue_rows(alias: str, queue: str) -> int:
    """Delete every row of ``queue``, reserved or not (the queue is being deleted)."""
    QueueMessage, _ = _models()
    return sqlite_retry(
        alias, lambda: QueueMessage._base_manager.using(alias).filter(queue=queue).delete()[0]
    )


def has_rows(alias: str, queue: str) -> bool:
    QueueMessage, _ = _models()
    return QueueMessage._base_manager.using(alias).filter(queue=queue).exists()
