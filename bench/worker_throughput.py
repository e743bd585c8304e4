"""The worker end to end: throughput, round-trip latency and memory, per transport.

    .venv/bin/python bench/worker_throughput.py            # 10,000 tasks, 500 round trips
    .venv/bin/python bench/worker_throughput.py --quick    # 1,000 tasks, 50 round trips
    .venv/bin/python bench/worker_throughput.py --only redis,amqp

For each transport (``django://`` on SQLite, ``django://`` on PostgreSQL,
``redis://``, ``amqp://``), with ``runworker -c 2`` (prefork):

* **throughput**: N no-op tasks are queued first, between a ``begin`` and an
  ``end`` marker task that write the time they ran; then the worker starts. The
  span is begin-to-end, so worker start-up is excluded. Once with results stored
  (``django-db`` for ``django://``, Redis for ``redis://`` and ``amqp://``), once
  with ``ignore_result=True``;
* **round trip**: ``noop.delay().get()`` 500 times in a row against the idle
  worker: p50 and p99;
* **memory**: the peak of the summed resident memory of the worker's processes
  (supervisor and children), sampled every 50 ms during the throughput runs.

Services on loopback as in tests/services.py. Each transport runs in its own
client process (its settings come from the environment, like the test project).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
QUEUE = "bench-worker"
REDIS_DB = 3
PG_DB = "tq_bench_worker"
RESULT_PREFIX = "tasks_q:result:"  # RedisStore.key()


def transports() -> dict[str, dict[str, str]]:
    redis_base = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0").rsplit("/", 1)[0]
    redis_url = f"{redis_base}/{REDIS_DB}"
    sqlite = str(Path(tempfile.gettempdir()) / "tq-bench-worker.sqlite3")
    amqp = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
    return {
        "django-sqlite": {"TQ_DATABASE": "sqlite", "SQLITE_PATH": sqlite, "TQ_BROKER_URL": "django://"},
        "django-postgres": {"TQ_DATABASE": "postgres", "POSTGRES_DB": PG_DB, "TQ_BROKER_URL": "django://"},
        "redis": {"TQ_DATABASE": "sqlite", "SQLITE_PATH": sqlite, "TQ_BROKER_URL": redis_url, "TQ_RESULT_BACKEND": redis_url},
        "amqp": {"TQ_DATABASE": "sqlite", "SQLITE_PATH": sqlite, "TQ_BROKER_URL": amqp, "TQ_RESULT_BACKEND": redis_url},
    }


# -- the parent: one client process per transport ------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1,000 tasks and 50 round trips")
    parser.add_argument("--tasks", type=int, default=None)
    parser.add_argument("--roundtrips", type=int, default=None)
    parser.add_argument("--only", default="", help="comma-separated transports")
    parser.add_argument("--run", help=argparse.SUPPRESS)
    args = parser.parse_args()
    tasks = args.tasks or (1000 if args.quick else 10_000)
    roundtrips = args.roundtrips or (50 if args.quick else 500)
    if args.run:
        print(json.dumps(run_one(tasks, roundtrips)))
        return
    chosen = [t for t in transports() if not args.only or t in args.only.split(",")]
    rows = []
    for name in chosen:
        env = {**os.environ, "DJANGO_SETTINGS_MODULE": "testproject.settings", **transports()[name]}
        if not reachable(name):
            print(f"{name}: service not reachable, skipped", flush=True)
            continue
        print(f"{name}: {tasks} tasks, {roundtrips} round trips...", flush=True)
        done = subprocess.run(
            [sys.executable, __file__, "--run", name, "--tasks", str(tasks), "--roundtrips", str(roundtrips)],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800,
        )  # fmt: skip
        if done.returncode:
            print(done.stdout[-3000:], done.stderr[-3000:], file=sys.stderr)
            raise SystemExit(f"{name} failed")
        rows.append({"transport": name, **json.loads(done.stdout.strip().splitlines()[-1])})
    print_table(rows, tasks, roundtrips)


def reachable(name: str) -> bool:
    import socket

    ports = {"django-postgres": 5432, "redis": 6379, "amqp": 5672}
    if name not in ports:
        return True
    try:
        socket.create_connection(("127.0.0.1", ports[name]), timeout=2).close()
        return True
    except OSError:
        return False


def print_table(rows: list[dict[str, Any]], tasks: int, roundtrips: int) -> None:
    print()
    print("| transport | tasks/s, results on | tasks/s, results off | round trip p50 / p99 (ms) | worker peak RSS (MB) |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['transport']} | {r['with_results']:,.0f} | {r['without_results']:,.0f} | "
            f"{r['p50_ms']:.1f} / {r['p99_ms']:.1f} | {r['peak_rss_mb']:.0f} |"
        )
    print(f"\n({tasks:,} no-op tasks per throughput run, concurrency 2 prefork; {roundtrips} round trips)")


# -- the child: measures one transport -------------------------------------------------------


def setup_django() -> None:
    """A fresh database (ours alone) with the migrations applied."""
    sys.path.insert(0, str(ROOT))
    if os.environ.get("TQ_DATABASE") == "postgres":
        import psycopg

        with psycopg.connect(host="127.0.0.1", user="postgres", dbname="postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{PG_DB}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{PG_DB}"')
    else:
        for suffix in ("", "-wal", "-shm"):
            Path(os.environ["SQLITE_PATH"] + suffix).unlink(missing_ok=True)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def reset() -> None:
    from django_tasks_q.messaging.connection import broker_connection
    from django_tasks_q.models import QueueMessage, TaskResult
    from django_tasks_q.worker.consumer import queue_entities

    TaskResult.objects.all().delete()
    QueueMessage.objects.filter(queue=QUEUE).delete()
    with broker_connection() as conn:
        _, queue = queue_entities(QUEUE)
        queue.bind(conn.channel()).declare()
        queue.bind(conn.channel()).purge()
    url = os.environ.get("TQ_RESULT_BACKEND", "")
    if url.startswith("redis"):  # only the results: the broker's bindings live there too
        import redis

        client = redis.Redis.from_url(url)
        for key in client.scan_iter(match=f"{RESULT_PREFIX}*", count=1000):
            client.delete(key)


class WorkerRun:
    """``runworker -c 2`` with its memory sampled."""

    def __init__(self) -> None:
        self.log = tempfile.NamedTemporaryFile(prefix="tq-bench-worker-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(
            [sys.executable, "manage.py", "runworker", "-Q", QUEUE, "-c", "2", "--without-heartbeat"],
            cwd=ROOT, env=os.environ.copy(), stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        self.peak_rss = 0
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()

    def _sample(self) -> None:
        import psutil

        parent = psutil.Process(self.proc.pid)
        while not self._stop.wait(0.05):
            try:
                procs = [parent, *parent.children(recursive=True)]
                self.peak_rss = max(self.peak_rss, sum(p.memory_info().rss for p in procs))
            except psutil.Error:
                pass

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 60
        while " ready." not in Path(self.log.name).read_text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(Path(self.log.name).read_text())
            time.sleep(0.02)

    def stop(self) -> None:
        self._stop.set()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
        os.unlink(self.log.name)


def throughput(tasks: int, results: bool, marks: str) -> tuple[float, int]:
    from testproject.demo import tasks as demo
    from testproject.demo import worker_tasks as wt

    reset()
    Path(marks).unlink(missing_ok=True)
    wt.record.apply_async((marks, "begin"), queue=QUEUE, ignore_result=True)
    for _ in range(tasks):
        demo.noop.apply_async(queue=QUEUE, ignore_result=not results)
    wt.record.apply_async((marks, "end"), queue=QUEUE, ignore_result=True)
    worker = WorkerRun()
    try:
        deadline = time.monotonic() + 1200
        while len(wt.lines(marks, "end")) < 2:  # the end marker notes "start" and "end" events
            if time.monotonic() > deadline or worker.proc.poll() is not None:
                raise SystemExit(f"worker did not finish: {Path(worker.log.name).read_text()[-3000:]}")
            time.sleep(0.05)
        if results:
            wait_results(tasks)
    finally:
        worker.stop()
    begin = min(float(r[4]) for r in wt.lines(marks) if r[1] == "begin")
    end = max(float(r[4]) for r in wt.lines(marks) if r[1] == "end")
    return tasks / (end - begin), worker.peak_rss


def wait_results(tasks: int) -> None:
    """Every result written (buffered writes land just after the task body)."""
    from django_tasks_q.models import TaskResult

    url = os.environ.get("TQ_RESULT_BACKEND", "")
    deadline = time.monotonic() + 60
    while True:
        if url.startswith("redis"):
            import redis

            client = redis.Redis.from_url(url)
            done = sum(1 for _ in client.scan_iter(match=f"{RESULT_PREFIX}*", count=1000)) >= tasks
        else:
            done = TaskResult.objects.filter(state="SUCCESS").count() >= tasks
        if done or time.monotonic() > deadline:
            return
        time.sleep(0.05)


def round_trips(count: int) -> tuple[float, float]:
    from testproject.demo import tasks as demo

    reset()
    worker = WorkerRun()
    try:
        worker.wait_ready()
        demo.noop.apply_async(queue=QUEUE).get(timeout=30)  # connections warm
        samples = []
        for _ in range(count):
            start = time.perf_counter()
            demo.noop.apply_async(queue=QUEUE).get(timeout=30)
            samples.append((time.perf_counter() - start) * 1000)
    finally:
        worker.stop()
    samples.sort()
    return statistics.median(samples), samples[min(len(samples) - 1, int(len(samples) * 0.99))]


def run_one(tasks: int, roundtrips: int) -> dict[str, Any]:
    setup_django()
    marks = str(Path(tempfile.gettempdir()) / f"tq-bench-marks-{os.getpid()}")
    with_results, rss1 = throughput(tasks, True, marks)
    without_results, rss2 = throughput(tasks, False, marks)
    p50, p99 = round_trips(roundtrips)
    Path(marks).unlink(missing_ok=True)
    return {
        "with_results": with_results,
        "without_results": without_results,
        "p50_ms": p50,
        "p99_ms": p99,
        "peak_rss_mb": max(rss1, rss2) / 1e6,
    }


if __name__ == "__main__":
    main()
