"""How our database costs grow with the table: ``django://`` claims and result writes.

``python -m bench.db_scaling --rows 0,1000000`` times, on PostgreSQL, with our own code
(``django_tasks_q.messaging.database_sql`` and the ``django-db`` result store):

* a publish (``delay()`` on ``django://``: one INSERT);
* a claim of 1 message, and of 10 (the transport's default batch), each followed by
  its ack (DELETE), per message;
* an idle poll: a claim on an empty queue while the other queue holds the backlog;
* a result write (one upsert per result), and 100 results per ``store_many``;

first with an empty table, then with the given number of rows already there: queued
messages (in the queue being claimed) and stored results.  Each figure is the median
of 3 passes.  It prints one JSON line per figure; ``bench.suite`` stores them in its
results file and ``bench.report`` shows how each cost grows.

Runs in its own process with Django set up on ``testproject`` and its own database
(``bench_scale_tq``, dropped and rebuilt first).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PG_DB = "bench_scale_tq"
QUEUE = "scale"
OPS = 1000  # timed operations per pass
PASSES = 3


def run_in_subprocess(rows: list[int], ops: int = OPS, timeout: float = 1200) -> list[dict]:
    """Run this module in a fresh process (Django set up there); return its records."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_SETTINGS")}
    env.update(
        DJANGO_SETTINGS_MODULE="testproject.settings", TQ_DATABASE="postgres",
        POSTGRES_DB=PG_DB, PYTHONPATH=str(REPO), TQ_BROKER_URL="django://",
        TQ_RESULT_BACKEND="django-db",
    )  # fmt: skip
    cmd = [sys.executable, "-m", "bench.db_scaling", "--rows", ",".join(map(str, rows)),
           "--ops", str(ops)]  # fmt: skip
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    if done.returncode:
        raise RuntimeError(f"db_scaling failed:\n{done.stderr[-3000:]}")
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


# -- inside the measuring process ------------------------------------------------------
def _setup_django() -> None:
    from . import services

    with services.pg_connect() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{PG_DB}" WITH (FORCE)')
    services.pg_create(PG_DB)
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    settings.DEBUG = False
    call_command("migrate", run_syncdb=True, verbosity=0, interactive=False)


def _timed(ops: int, fn: Callable[[int], None], before: Callable[[], None] | None = None) -> float:
    """Median microseconds per operation over PASSES passes of ``fn(ops)``."""
    samples = []
    for _ in range(PASSES):
        if before is not None:
            before()
        started = time.perf_counter()
        fn(ops)
        samples.append(1e6 * (time.perf_counter() - started) / ops)
    return statistics.median(samples)


def _load(rows: int) -> float:
    """Bring both tables to ``rows`` rows (queued messages in QUEUE, SUCCESS results)."""
    from django.db import connection

    from django_tasks_q.models import QueueMessage, TaskResult

    started = time.perf_counter()
    with connection.cursor() as cursor:
        for model in (QueueMessage, TaskResult):
            cursor.execute(f"TRUNCATE {model._meta.db_table}")
        if rows:
            payload = json.dumps({"body": "W10=", "headers": {"task": "bench.noop"},
                                  "properties": {"priority": 0}})  # fmt: skip
            cursor.execute(
                f"INSERT INTO {QueueMessage._meta.db_table} (queue, payload, priority, visible_at,"
                " created_at, delivery_count, task_id) SELECT %s, %s::jsonb, 0,"
                " now() - interval '1 hour', now(), 0, 'backlog-' || g"
                " FROM generate_series(1, %s) g",
                [QUEUE, payload, rows],
            )
            cursor.execute(
                f"INSERT INTO {TaskResult._meta.db_table} (task_id, task_name, state, retries,"
                " date_done, date_created, date_updated, result) SELECT 'old-' || g, 'bench.noop',"
                " 'SUCCESS', 0, now(), now(), now(), '1'::jsonb FROM generate_series(1, %s) g",
                [rows],
            )
        for model in (QueueMessage, TaskResult):
            cursor.execute(f"VACUUM ANALYZE {model._meta.db_table}")
    return time.perf_counter() - started


_task = None


def _scale_task():
    global _task
    if _task is None:
        from django_tasks_q import task

        @task(name="bench.scale_noop", queue=QUEUE)
        def scale_noop() -> None:
            return None

        _task = scale_noop
    return _task


def measure(rows: int, ops: int) -> list[dict]:
    from django.db import connection

    from django_tasks_q.message import new_id
    from django_tasks_q.messaging import database_sql
    from django_tasks_q.results import get_store
    from django_tasks_q.results.base import StoreItem

    scale_noop = _scale_task()
    alias = connection.alias
    loaded = _load(rows)
    store = get_store()
    owner = f"bench-scale-{os.getpid()}"

    def publish(k: int) -> None:
        for _ in range(k):
            scale_noop.apply_async(ignore_result=True)

    def claim_ack(batch: int) -> Callable[[int], None]:
        def run(k: int) -> None:
            for _ in range(0, k, batch):
                got = database_sql.claim(alias, QUEUE, owner, batch)
                database_sql.delete_owned(alias, [row.id for row in got], owner)

        return run

    def idle_poll(k: int) -> None:
        for _ in range(k):
            database_sql.claim(alias, "scale-empty", owner, 10)

    def store_one(k: int) -> None:
        for _ in range(k):
            store.store_result(new_id(), 1, "SUCCESS")

    def store_batches(k: int) -> None:
        for _ in range(0, k, 100):
            store.store_many([StoreItem(new_id(), 1, "SUCCESS") for _ in range(100)])

    figures = [
        ("publish: delay() on django:// (INSERT)", publish, None),
        ("claim 1 + ack, per message", claim_ack(1), lambda: publish(ops)),
        ("claim 10 + ack 10, per message", claim_ack(10), lambda: publish(ops)),
        ("idle poll: claim on an empty queue", idle_poll, None),
        ("result write: one result per upsert", store_one, None),
        ("result write: store_many of 100, per result", store_batches, None),
    ]
    out = []
    for label, fn, before in figures:
        us = _timed(ops, fn, before)
        out.append({"type": "dbscale", "op": label, "rows": rows, "us_per_op": us, "ops": ops,
                    "load_s": loaded})  # fmt: skip
        print(f"  [{rows:>9,} rows] {label:<48} {us:9.1f} µs/op", file=sys.stderr, flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.db_scaling", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--rows", default="0,1000000", help="comma-separated table sizes")
    p.add_argument("--ops", type=int, default=OPS, help="timed operations per pass")
    args = p.parse_args(argv)
    if "DJANGO_SETTINGS_MODULE" not in os.environ:
        print(json.dumps(run_in_subprocess([int(r) for r in args.rows.split(",")], args.ops)))
        return 0
    _setup_django()
    for rows in (int(r) for r in args.rows.split(",")):
        for rec in measure(rows, args.ops):
            print(json.dumps(rec), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
