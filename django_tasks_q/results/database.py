"""The ``django-db`` result store: ``TaskResult`` rows in the Django database.

Every write is one statement (a guarded upsert, see :mod:`.sql`); a batch of
``store_many`` is one statement per few thousand rows. Reads are one indexed query.
``wait_for`` polls with exponential backoff (5 ms doubling up to ``interval``); on
PostgreSQL ready writes also ``pg_notify`` and waiters wake on the notification.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db import IntegrityError, connections, router, transaction
from django.db.models import F
from django.utils import timezone

from .. import states
from ..conf import settings
from . import sql
from .base import (
    COALESCE_FIELDS,
    FIRST_POLL_DELAY,
    OVERWRITE_FIELDS,
    ChordReady,
    ResultStore,
    empty_meta,
    missing_chord,
    notify_if_changed,
    wait_budget,
)
from .codec import dumps, loads

#: record key -> TaskResult column, where they differ
COLUMN = {"status": "state", "name": "task_name"}
NOTIFY_CHANNEL = "tasks_q_result"
#: ``get_many_meta`` looks ids up in chunks of this size
IN_CHUNK = 500


def _models():
    from ..models import ChordCounter, GroupResult, TaskResult

    return TaskResult, GroupResult, ChordCounter


def _column(key: str) -> str:
    return COLUMN.get(key, key)


_SELECT = ["task_id", *(_column(k) for k in OVERWRITE_FIELDS + COALESCE_FIELDS)]


def _row_to_meta(row: dict[str, Any]) -> dict[str, Any]:
    meta = {key: row[_column(key)] for key in ("task_id", *OVERWRITE_FIELDS, *COALESCE_FIELDS)}
    meta["children"] = meta["children"] or []
    meta["retries"] = meta["retries"] or 0
    return meta


def _json_value(value: Any) -> Any:
    """A JSON column read by raw SQL: text on SQLite/MySQL, maybe decoded on PostgreSQL."""
    if isinstance(value, str | bytes | bytearray | memoryview):
        return loads(value)
    return value


class DatabaseStore(ResultStore):
    """Results as ``TaskResult`` rows; groups and chord counters as their own rows."""

    def __init__(self, url: str = "django-db") -> None:
        self.url = url
        self._pg_statements: dict[tuple, tuple[str, list]] = {}
        if settings.RESULT_SERIALIZER != "json":
            raise ImproperlyConfigured(
                f"TASKS_Q['RESULT_SERIALIZER'] is {settings.RESULT_SERIALIZER!r}, but the "
                "django-db result store keeps results in JSON columns. Set it to 'json'."
            )

    # -- plumbing --------------------------------------------------------------------

    @staticmethod
    def _alias(model: Any) -> str:
        return router.db_for_write(model)

    def database_alias(self) -> str:
        """The alias task results are written to (the worker writes on its own connection there)."""
        return self._alias(_models()[0])

    def _notify_enabled(self, connection: Any) -> bool:
        return connection.vendor == "postgresql"

    # -- writes ----------------------------------------------------------------------

    def write_records(self, records: list[dict[str, Any]]) -> None:
        if not records:
            return
        TaskResult = _models()[0]
        connection = connections[self._alias(TaskResult)]
        if not sql.supports_upsert(connection):
            self._write_generic(TaskResult, connection, records)
            return
        # Coalesce columns no record of the batch sets are left out: an insert makes
        # them NULL and an update keeps them, exactly as NULLs in the statement would.
        present = tuple(k for k in COALESCE_FIELDS if any(r[k] is not None for r in records))
        if connection.vendor == "postgresql":
            self._write_postgresql(TaskResult, connection, records, present)
            return
        keys = ["task_id", *OVERWRITE_FIELDS, *present]
        fields = [TaskResult._meta.get_field(_column(k)) for k in keys]
        stamp = TaskResult._meta.get_field("date_updated").get_db_prep_save(
            timezone.now(), connection
        )
        rows = []
        for record in records:
            row = [
                None if value is None else field.get_db_prep_save(_fit(field, value), connection)
                for field, value in zip(fields, [record[k] for k in keys], strict=True)
            ]
            # values ordered key, overwrite (+ date_updated), coalesce, insert-only (date_created)
            row[len(OVERWRITE_FIELDS) + 1 : len(OVERWRITE_FIELDS) + 1] = [stamp]
            row.append(stamp)
            rows.append(row)
        per_statement = sql.max_rows_per_statement(connection, len(rows[0]))
        channel = NOTIFY_CHANNEL if self._notify_enabled(connection) else None
        shape = _upsert_shape(TaskResult, present)
        with connection.cursor() as cursor:
            for start in range(0, len(rows), per_statement):
                chunk = rows[start : start + per_statement]
                statement, params = sql.upsert(connection, *shape, chunk, notify_channel=channel)
                cursor.execute(statement, params)

    def _write_postgresql(
        self, TaskResult: Any, connection: Any, records: list[dict], present: tuple[str, ...]
    ) -> None:
        """One statement with the rows as one JSON parameter (:func:`sql.upsert_json_rows`)."""
        key = (connection.alias, present, self._notify_enabled(connection))
        plan = self._pg_statements.get(key)
        if plan is None:
            plan = self._pg_statements[key] = _pg_plan(TaskResult, connection, present, key[2])
        statement, cells = plan
        stamp = timezone.now().isoformat()
        rows = []
        for record in records:
            row = {"date_updated": stamp, "date_created": stamp}
            for name, column, cell in cells:
                value = record[name]
                if value is not None:
                    row[column] = value if cell is None else cell(value)
            rows.append(row)
        with connection.cursor() as cursor:
            cursor.execute(statement, [dumps(rows)])

    def _write_generic(self, TaskResult: Any, connection: Any, records: list[dict]) -> None:
        """Other vendors: a guarded UPDATE, then an INSERT when no row existed."""
        for record in records:
            values = {_column(k): record[k] for k in OVERWRITE_FIELDS}
            values.update({_column(k): record[k] for k in COALESCE_FIELDS if record[k] is not None})
            values["date_updated"] = timezone.now()
            qs = TaskResult.objects.using(connection.alias).filter(task_id=record["task_id"])
            with transaction.atomic(using=connection.alias):
                current = qs.select_for_update().values_list("state", flat=True).first()
                if current is None:
                    TaskResult.objects.using(connection.alias).create(
                        task_id=record["task_id"], **values
                    )
                elif current not in states.READY_STATES or record["status"] in states.READY_STATES:
                    qs.update(**values)

    # -- reads -----------------------------------------------------------------------

    def get_task_meta(self, task_id: str) -> dict[str, Any]:
        TaskResult = _models()[0]
        row = (
            TaskResult.objects.using(router.db_for_read(TaskResult))
            .filter(task_id=task_id)
            .values(*_SELECT)
            .first()
        )
        return _row_to_meta(row) if row else empty_meta(str(task_id))

    def get_many_meta(self, task_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        TaskResult = _models()[0]
        ids = [str(t) for t in task_ids]
        found: dict[str, dict[str, Any]] = {}
        qs = TaskResult.objects.using(router.db_for_read(TaskResult))
        for start in range(0, len(ids), IN_CHUNK):
            chunk = ids[start : start + IN_CHUNK]
            for row in qs.filter(task_id__in=chunk).values(*_SELECT).order_by():
                found[row["task_id"]] = _row_to_meta(row)
        return {tid: found.get(tid) or empty_meta(tid) for tid in ids}

    def wait_for(
        self,
        task_id: str,
        timeout: float | None = None,
        interval: float = 0.5,
        on_message: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        TaskResult = _models()[0]
        connection = connections[router.db_for_read(TaskResult)]
        if connection.vendor != "postgresql" or connection.in_atomic_block:
            return super().wait_for(task_id, timeout, interval, on_message)
        from .pg_listen import listener_for

        listener = listener_for(connection)
        if listener is None:
            return super().wait_for(task_id, timeout, interval, on_message)
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = FIRST_POLL_DELAY
        interval = max(interval, FIRST_POLL_DELAY)
        seen = None
        with listener.watch(str(task_id)) as event:
            while True:
                event.clear()
                meta = self.get_task_meta(task_id)
                if on_message is not None:
                    seen = notify_if_changed(meta, seen, on_message)
                if meta["status"] in states.READY_STATES:
                    return meta
                remaining = wait_budget(deadline, task_id, timeout, meta)
                # The notification wakes us at once; the backoff is a safety net only.
                event.wait(delay if remaining is None else min(delay, remaining))
                delay = min(delay * 2, interval)

    def forget(self, task_id: str) -> None:
        TaskResult = _models()[0]
        TaskResult.objects.using(self._alias(TaskResult)).filter(task_id=task_id).delete()

    # -- groups ----------------------------------------------------------------------

    def save_group(self, group_id: str, result_ids: list[str]) -> None:
        GroupResult = _models()[1]
        alias = self._alias(GroupResult)
        GroupResult.objects.using(alias).bulk_create(
            [GroupResult(group_id=group_id, result_ids=[str(i) for i in result_ids])],
            update_conflicts=True,
            unique_fields=_conflict_target(alias, "group_id"),
            update_fields=["result_ids"],
        )

    def restore_group(self, group_id: str) -> list[str] | None:
        GroupResult = _models()[1]
        qs = GroupResult.objects.using(router.db_for_read(GroupResult))
        ids = qs.filter(group_id=group_id).values_list("result_ids", flat=True).first()
        return None if ids is None else list(ids)

    def delete_group(self, group_id: str) -> None:
        GroupResult = _models()[1]
        GroupResult.objects.using(self._alias(GroupResult)).filter(group_id=group_id).delete()

    # -- chords ----------------------------------------------------------------------

    def chord_init(self, group_id: str, total: int, body: dict, result_ids: list[str]) -> None:
        from ..models import ChordPart

        ChordCounter = _models()[2]
        alias = self._alias(ChordCounter)
        ChordPart.objects.using(alias).filter(counter__group_id=group_id).delete()
        ChordCounter.objects.using(self._alias(ChordCounter)).bulk_create(
            [
                ChordCounter(
                    group_id=group_id,
                    remaining=total,
                    total=total,
                    body=body,
                    result_ids=[str(i) for i in result_ids],
                )
            ],
            update_conflicts=True,
            unique_fields=_conflict_target(alias, "group_id"),
            update_fields=["remaining", "total", "body", "result_ids"],
        )

    def chord_part_done(self, group_id: str, member_id: str | None = None) -> ChordReady | None:
        ChordCounter = _models()[2]
        alias = self._alias(ChordCounter)
        if member_id is None:
            return self._decrement(group_id, alias)
        # Recording the member and decrementing commit together, or not at all.
        with transaction.atomic(using=alias):
            if not self._claim_part(group_id, str(member_id), alias):
                return None
            return self._decrement(group_id, alias)

    def _claim_part(self, group_id: str, member_id: str, alias: str) -> bool:
        """Record ``member_id`` as counted; False when it already was (or no chord)."""
        from ..models import ChordPart

        ChordCounter = _models()[2]
        counters = ChordCounter.objects.using(alias).filter(group_id=group_id)
        # Lock the counter first: inserting the part takes a shared lock on it (the
        # foreign key) and the decrement an exclusive one; two members each holding
        # the shared lock deadlock on MySQL/MariaDB. A fixed lock order cannot.
        counter_pk = counters.select_for_update().values_list("pk", flat=True).first()
        if counter_pk is None:
            missing_chord(group_id)
            return False
        try:
            with transaction.atomic(using=alias):
                ChordPart.objects.using(alias).create(counter_id=counter_pk, task_id=member_id)
        except IntegrityError:  # counted already (a redelivered member)
            return False
        return True

    def _decrement(self, group_id: str, alias: str) -> ChordReady | None:
        ChordCounter = _models()[2]
        connection = connections[alias]
        statement = sql.decrement_returning(connection, ChordCounter._meta.db_table, "group_id")
        if statement is not None:
            with connection.cursor() as cursor:
                cursor.execute(statement, [group_id])
                rows = cursor.fetchall()
            if not rows:
                return missing_chord(group_id)
            remaining, body, result_ids = rows[0]
            body, result_ids = _json_value(body), _json_value(result_ids)
        else:
            qs = ChordCounter.objects.using(alias).filter(group_id=group_id)
            with transaction.atomic(using=alias):
                if not qs.update(remaining=F("remaining") - 1):
                    return missing_chord(group_id)
                remaining, body, result_ids = qs.values_list(
                    "remaining", "body", "result_ids"
                ).get()
        if remaining != 0:
            return None
        return ChordReady(group_id=group_id, body=body, result_ids=list(result_ids))

    # -- expiry ----------------------------------------------------------------------

    def cleanup(self, expires: timedelta | None = None, chunk_size: int = 1000) -> int:
        from ..cleanup import delete_expired_rows

        expiry = self.expiry(expires)
        if expiry is None:
            return 0
        return delete_expired_rows(timezone.now() - expiry, chunk_size=chunk_size)


def _conflict_target(alias: str, field: str) -> list[str] | None:
    """``unique_fields`` for an upsert: MySQL/MariaDB take none (any unique key applies)."""
    return [field] if connections[alias].features.supports_update_conflicts_with_target else None


def _upsert_shape(TaskResult: Any, present: tuple[str, ...]) -> tuple:
    """(table, key, state column, overwrite, coalesce, insert-only columns) of the upsert."""
    overwrite = [*map(_column, OVERWRITE_FIELDS), "date_updated"]
    coalesce = list(map(_column, present))
    return TaskResult._meta.db_table, "task_id", "state", overwrite, coalesce, ["date_created"]


def _pg_plan(
    TaskResult: Any, connection: Any, present: tuple[str, ...], notify: bool
) -> tuple[str, list[tuple[str, str, Callable[[Any], Any] | None]]]:
    """The JSON-rows upsert for these columns, and how each record value becomes JSON."""
    shape = _upsert_shape(TaskResult, present)
    _, key, _, overwrite, coalesce, insert_only = shape
    columns = [key, *overwrite, *coalesce, *insert_only]
    types = {c: TaskResult._meta.get_field(c).db_type(connection) for c in columns}
    channel = NOTIFY_CHANNEL if notify else None
    statement = sql.upsert_json_rows(connection, *shape, types, notify_channel=channel)
    cells = []
    for name in ("task_id", *OVERWRITE_FIELDS, *present):
        field = TaskResult._meta.get_field(_column(name))
        cells.append((name, field.column, _json_cell(field)))
    return statement, cells


def _json_cell(field: Any) -> Callable[[Any], Any] | None:
    """How a value becomes the JSON ``jsonb_to_recordset`` reads into ``field`` (None: as is)."""
    kind = field.get_internal_type()
    if kind == "JSONField":
        return None  # encoded with the rest, by the same encoder as the column's
    if kind == "DateTimeField":
        return lambda value: field.get_prep_value(value).isoformat()
    max_length = getattr(field, "max_length", None)

    def cell(value: Any) -> Any:
        if type(value) is not str and type(value) is not int:
            value = field.get_prep_value(value)
        if max_length and isinstance(value, str) and len(value) > max_length:
            return value[:max_length]
        return value

    return cell


def _fit(field: Any, value: Any) -> Any:
    """Clip strings to a CharField's max_length rather than fail the whole write."""
    max_length = getattr(field, "max_length", None)
    if max_length and isinstance(value, str) and len(value) > max_length:
        return value[:max_length]
    return value
