"""One-statement guarded upserts of result rows, per database vendor.

Django's ``bulk_create(update_conflicts=True)`` cannot keep a column when the new
value is NULL, nor skip a row whose stored state is final, so the write is one
hand-built ``INSERT ... ON CONFLICT DO UPDATE ... WHERE`` (PostgreSQL, SQLite) or
``INSERT ... ON DUPLICATE KEY UPDATE col = IF(...)`` (MySQL, MariaDB). Values go
through each model field's ``get_db_prep_save`` exactly as the ORM would send them.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from .. import states

READY_SQL = ", ".join(f"'{s}'" for s in sorted(states.READY_STATES))
#: PostgreSQL's limit on bind parameters in one statement
PG_MAX_PARAMS = 65535


def supports_upsert(connection: Any) -> bool:
    return connection.vendor in ("postgresql", "sqlite", "mysql")


def max_rows_per_statement(connection: Any, columns: int) -> int:
    if connection.vendor == "postgresql":
        return max(1, PG_MAX_PARAMS // columns)
    if connection.vendor == "sqlite":
        connection.ensure_connection()
        try:
            limit = connection.connection.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
        except AttributeError:  # Python < 3.11
            limit = 999
        return max(1, limit // columns)
    return 1000


def upsert(
    connection: Any,
    table: str,
    key: str,
    state_col: str,
    overwrite: list[str],
    coalesce: list[str],
    insert_only: list[str],
    rows: list[list[Any]],
    notify_channel: str | None = None,
) -> tuple[str, list[Any]]:
    """SQL and params writing ``rows`` (values ordered key, overwrite, coalesce, insert_only).

    ``state_col`` must be in ``overwrite``. With ``notify_channel`` (PostgreSQL only)
    the statement also ``pg_notify``-s the ids of rows written in a ready state.
    """
    qn = connection.ops.quote_name
    columns = [key, *overwrite, *coalesce, *insert_only]
    placeholders = "(" + ", ".join(["%s"] * len(columns)) + ")"
    values = ", ".join([placeholders] * len(rows))
    params = [value for row in rows for value in row]
    head = f"INSERT INTO {qn(table)} ({', '.join(qn(c) for c in columns)}) VALUES {values}"
    if connection.vendor in ("postgresql", "sqlite"):
        sql = _on_conflict(connection, head, table, key, state_col, overwrite, coalesce)
        if notify_channel and connection.vendor == "postgresql":
            sql = _notify_ready(connection, sql, key, state_col, notify_channel)
        return sql, params
    if connection.vendor == "mysql":
        state = qn(state_col)
        # MySQL applies assignments left to right and later ones see earlier results,
        # so the guard reads the old state only if the state column is assigned last.
        guard = f"({state} NOT IN ({READY_SQL}) OR VALUES({state}) IN ({READY_SQL}))"
        sets = [
            f"{qn(c)} = IF({guard}, COALESCE(VALUES({qn(c)}), {qn(c)}), {qn(c)})" for c in coalesce
        ]
        sets += [
            f"{qn(c)} = IF({guard}, VALUES({qn(c)}), {qn(c)})" for c in overwrite if c != state_col
        ]
        sets.append(f"{state} = IF({guard}, VALUES({state}), {state})")
        return f"{head} ON DUPLICATE KEY UPDATE {', '.join(sets)}", params
    raise NotImplementedError(connection.vendor)


def upsert_json_rows(
    connection: Any,
    table: str,
    key: str,
    state_col: str,
    overwrite: list[str],
    coalesce: list[str],
    insert_only: list[str],
    types: dict[str, str],
    notify_channel: str | None = None,
) -> str:
    """PostgreSQL: :func:`upsert` with every row in one JSON array parameter.

    The statement is the same for any number of rows (psycopg parses it once, the
    server gets one parameter); ``types`` maps each column to its SQL type, the
    rows' keys are the column names, a missing key or JSON null is SQL NULL.
    """
    qn = connection.ops.quote_name
    columns = [key, *overwrite, *coalesce, *insert_only]
    names = ", ".join(qn(c) for c in columns)
    shape = ", ".join(f"{qn(c)} {types[c]}" for c in columns)
    head = (
        f"INSERT INTO {qn(table)} ({names}) SELECT {names} "
        f"FROM jsonb_to_recordset(%s::jsonb) AS x({shape})"
    )
    sql = _on_conflict(connection, head, table, key, state_col, overwrite, coalesce)
    if notify_channel:
        sql = _notify_ready(connection, sql, key, state_col, notify_channel)
    return sql


def _on_conflict(
    connection: Any,
    head: str,
    table: str,
    key: str,
    state_col: str,
    overwrite: list[str],
    coalesce: list[str],
) -> str:
    """PostgreSQL and SQLite: the guarded ``ON CONFLICT DO UPDATE`` after ``head``."""
    qn = connection.ops.quote_name
    t, state = qn(table), qn(state_col)
    sets = [f"{qn(c)} = EXCLUDED.{qn(c)}" for c in overwrite]
    sets += [f"{qn(c)} = COALESCE(EXCLUDED.{qn(c)}, {t}.{qn(c)})" for c in coalesce]
    return (
        f"{head} ON CONFLICT ({qn(key)}) DO UPDATE SET {', '.join(sets)} "
        f"WHERE {t}.{state} NOT IN ({READY_SQL}) OR EXCLUDED.{state} IN ({READY_SQL})"
    )


def _notify_ready(connection: Any, sql: str, key: str, state_col: str, channel: str) -> str:
    """PostgreSQL: ``pg_notify`` the ids of the rows ``sql`` wrote in a ready state."""
    qn = connection.ops.quote_name
    return (
        f"WITH written AS ({sql} RETURNING {qn(key)} AS k, {qn(state_col)} AS s) "
        f"SELECT pg_notify('{channel}', k) FROM written WHERE s IN ({READY_SQL})"
    )


def decrement_returning(connection: Any, table: str, key: str) -> str | None:
    """``UPDATE ... SET remaining = remaining - 1 ... RETURNING`` where supported, else None."""
    qn = connection.ops.quote_name
    vendor = connection.vendor
    returning = vendor == "postgresql" or (
        vendor == "sqlite" and sqlite3.sqlite_version_info >= (3, 35)
    )
    if not returning:
        return None
    return (
        f"UPDATE {qn(table)} SET {qn('remaining')} = {qn('remaining')} - 1 "
        f"WHERE {qn(key)} = %s RETURNING {qn('remaining')}, {qn('body')}, {qn('result_ids')}"
    )
