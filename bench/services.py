"""The shared services on loopback, as the harness uses them.

Each system gets its own Redis database number and PostgreSQL database, so a
reset (flush or truncate) touches nothing of anyone else's.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import psycopg
import redis

REDIS_BASE = os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379")
AMQP_URL = os.environ.get("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
PG_HOST = os.environ.get("POSTGRES_HOST", "127.0.0.1")
PG_PORT = os.environ.get("POSTGRES_PORT", "5432")
PG_USER = os.environ.get("POSTGRES_USER", "postgres")


def redis_url(db: int) -> str:
    return f"{REDIS_BASE}/{db}"


def redis_client(db: int) -> redis.Redis:
    return redis.Redis.from_url(redis_url(db))


def flush_redis(db: int) -> None:
    redis_client(db).flushdb()


def count_redis_keys(db: int, pattern: str) -> int:
    client = redis_client(db)
    return sum(1 for _ in client.scan_iter(match=pattern, count=1000))


def pg_connect(dbname: str = "postgres") -> psycopg.Connection:
    return psycopg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname=dbname, autocommit=True)


def pg_create(dbname: str) -> None:
    """Create ``dbname`` unless it exists."""
    with pg_connect() as conn:
        found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone()
        if not found:
            conn.execute(f'CREATE DATABASE "{dbname}"')


def pg_tables(dbname: str, prefixes: tuple[str, ...]) -> list[str]:
    with pg_connect(dbname) as conn:
        rows = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
        ).fetchall()
    return sorted(t for (t,) in rows if t.startswith(prefixes))


def pg_truncate(dbname: str, prefixes: tuple[str, ...]) -> None:
    tables = pg_tables(dbname, prefixes)
    if tables:
        names = ", ".join(f'"{t}"' for t in tables)
        with pg_connect(dbname) as conn:
            conn.execute(f"TRUNCATE {names} RESTART IDENTITY CASCADE")


def pg_count(dbname: str, sql: str) -> int:
    with pg_connect(dbname) as conn:
        return int(conn.execute(sql).fetchone()[0])


def sqlite_clear(path: Path, prefixes: tuple[str, ...]) -> None:
    if not path.exists():
        return
    conn = sqlite3.connect(path, timeout=30)
    try:
        tables = [
            t
            for (t,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            if t.startswith(prefixes)
        ]
        for table in tables:
            conn.execute(f'DELETE FROM "{table}"')
        conn.commit()
        conn.execute("VACUUM")
    finally:
        conn.close()


def sqlite_count(path: Path, sql: str) -> int:
    conn = sqlite3.connect(path, timeout=30)
    try:
        return int(conn.execute(sql).fetchone()[0])
    finally:
        conn.close()


def amqp_purge(queues: tuple[str, ...]) -> None:
    """Empty these RabbitMQ queues; a queue that does not exist yet is fine."""
    import amqp

    url = AMQP_URL.split("://", 1)[1].rstrip("/")
    creds, _, host = url.rpartition("@")
    user, _, password = creds.partition(":")
    conn = amqp.Connection(
        host=host or "127.0.0.1:5672", userid=user or "guest", password=password or "guest"
    )
    conn.connect()
    try:
        for queue in queues:
            channel = conn.channel()
            try:
                channel.queue_purge(queue)
            except amqp.exceptions.NotFound:
                pass
            finally:
                if channel.is_open:
                    channel.close()
    finally:
        conn.close()
