"""Enqueue rate per transport: N ``delay()`` calls from one process, and the bulk path.

    python bench/enqueue.py            # 10,000 calls per transport
    python bench/enqueue.py --quick    # 2,000 calls per transport
    python bench/enqueue.py -n 5000 --only redis,memory

The bulk figure is ``Task.delay_many`` of the same N calls (one Redis pipeline or one
``django://`` transaction per 1,000 messages; see docs/calling.md).

Each transport runs in its own child process (the database is chosen when
settings load). ``django://`` runs against a fresh test database (SQLite, and
PostgreSQL when reachable), and also reports the database round trips per
enqueue, counted with ``CaptureQueriesContext``. A transport whose service is
not reachable is reported as skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")

#: name -> (database, broker URL)
TRANSPORTS: dict[str, tuple[str, str]] = {
    "django-sqlite": ("sqlite", "django://"),
    "django-postgres": ("postgres", "django://"),
    "redis": ("sqlite", REDIS_URL),
    "amqp": ("sqlite", AMQP_URL),
    "memory": ("sqlite", "memory://"),
}


def reachable(url_or_db: str) -> bool:
    if url_or_db == "postgres":
        host = os.environ.get("POSTGRES_HOST", "127.0.0.1")
        port = int(os.environ.get("POSTGRES_PORT", "5432"))
    else:
        u = urlparse(url_or_db)
        if u.scheme in ("django", "memory"):
            return True
        host, port = u.hostname or "127.0.0.1", u.port or {"redis": 6379, "amqp": 5672}[u.scheme]
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


# -- child: one transport -------------------------------------------------------------
def child(name: str, n: int) -> dict:
    database, url = TRANSPORTS[name]
    sys.path.insert(0, str(ROOT))
    os.environ["DJANGO_SETTINGS_MODULE"] = "testproject.settings"
    os.environ["TQ_DATABASE"] = database
    # Own test databases, so a benchmark never clobbers a test run's.
    tmp = Path(os.environ.get("TMPDIR", "/tmp"))
    os.environ["SQLITE_TEST_PATH"] = str(tmp / f"tasks-q-bench-{os.getpid()}.sqlite3")
    os.environ["POSTGRES_TEST_DB"] = "test_tasks_q_bench"
    import django

    django.setup()
    from django.conf import settings as django_settings
    from django.db import connection
    from django.test import override_settings
    from django.test.utils import CaptureQueriesContext

    from testproject.demo.tasks import add

    queue = f"bench-enqueue-{uuid.uuid4().hex[:8]}"
    uses_db = url.startswith("django://")
    old_name = None
    if uses_db:
        old_name = connection.settings_dict["NAME"]
        connection.creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
    django_settings.DEBUG = False
    out: dict = {"transport": name, "n": n}
    try:
        with override_settings(
            TASKS_Q={"BROKER_URL": url, "DEFAULT_QUEUE": queue, "QUEUES": [queue]}
        ):
            for _ in range(50):  # warm up: connection, pool, queue declaration
                add.delay(1, 2)
            if uses_db:
                sample = 200
                with CaptureQueriesContext(connection) as ctx:
                    for _ in range(sample):
                        add.delay(1, 2)
                out["db_queries_per_enqueue"] = round(len(ctx.captured_queries) / sample, 2)
                out["db_statements"] = sorted(
                    {q["sql"].split()[0].upper() for q in ctx.captured_queries}
                )
            started = time.perf_counter()
            for _ in range(n):
                add.delay(1, 2)
            elapsed = time.perf_counter() - started
            out.update(
                seconds=round(elapsed, 3),
                per_second=round(n / elapsed),
                us_per_call=round(elapsed / n * 1e6, 1),
            )
            calls = [(1, 2)] * n
            started = time.perf_counter()
            add.delay_many(calls)
            elapsed = time.perf_counter() - started
            out.update(
                bulk_per_second=round(n / elapsed), bulk_us_per_task=round(elapsed / n * 1e6, 1)
            )
            _drop_queue(url, queue)
    finally:
        if uses_db:
            connection.creation.destroy_test_db(old_name, verbosity=0)
    return out


def _drop_queue(url: str, queue: str) -> None:
    from django_tasks_q.messaging.connection import broker_connection

    if url.startswith("django://"):
        return  # the test database is dropped
    conn = broker_connection(url)
    try:
        conn.default_channel.queue_delete(queue)
    except Exception:
        pass
    finally:
        conn.release()


# -- parent ------------------------------------------------------------------------------
def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="2,000 calls instead of 10,000")
    parser.add_argument("-n", type=int, default=None, help="calls per transport")
    parser.add_argument(
        "--only", default="", help="comma-separated subset of: " + ", ".join(TRANSPORTS)
    )
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true", help="print one JSON object per transport")
    args = parser.parse_args()
    n = args.n or (2000 if args.quick else 10000)
    if args.child:
        print(json.dumps(child(args.child, n)))
        return 0

    names = [x for x in args.only.split(",") if x] or list(TRANSPORTS)
    unknown = [x for x in names if x not in TRANSPORTS]
    if unknown:
        parser.error(f"unknown transport(s) {unknown}; choose from {', '.join(TRANSPORTS)}")
    rows = []
    for name in names:
        database, url = TRANSPORTS[name]
        if not reachable(database if database == "postgres" else url):
            rows.append({"transport": name, "skipped": "service not reachable"})
            continue
        proc = subprocess.run(
            [sys.executable, __file__, "--child", name, "-n", str(n)],
            capture_output=True, text=True, cwd=ROOT, timeout=900,
        )  # fmt: skip
        if proc.returncode != 0:
            rows.append(
                {"transport": name, "error": (proc.stderr.strip().splitlines() or ["?"])[-1]}
            )
            continue
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    if args.json:
        for row in rows:
            print(json.dumps(row))
    else:
        print_table(rows, n)
    return 1 if any("error" in r for r in rows) else 0


def print_table(rows: list[dict], n: int) -> None:
    print(f"Enqueue rate: {n:,} delay() calls from one process, per transport; bulk: delay_many")
    print(
        f"{'transport':<17}{'enqueue/s':>11}{'us/call':>10}{'seconds':>9}"
        f"{'bulk/s':>10}{'bulk us/task':>14}{'DB queries/enqueue':>20}"
    )
    for r in rows:
        if "skipped" in r or "error" in r:
            print(f"{r['transport']:<17}  {r.get('skipped') or 'ERROR: ' + r['error']}")
            continue
        q = r.get("db_queries_per_enqueue")
        queries = f"{q} ({', '.join(r['db_statements'])})" if q is not None else "-"
        print(
            f"{r['transport']:<17}{r['per_second']:>11,}{r['us_per_call']:>10}{r['seconds']:>9}"
            f"{r['bulk_per_second']:>10,}{r['bulk_us_per_task']:>14}{queries:>20}"
        )


if __name__ == "__main__":
    sys.exit(main())
