"""The ``django://`` transport on SQLite and PostgreSQL: throughput and wake-up latency.

    .venv/bin/python bench/transport_database.py [--database sqlite|postgres|both]
        [--messages 5000] [--processes 2]

Measures, with protocol-v2 task messages (about 450 bytes of JSON per row):

* publish rate: ``Producer.publish`` one message per autocommit INSERT, and
  the same inside one ``transaction.atomic()`` block;
* consume+ack rate: one consumer (``claim_batch`` 10, ``prefetch_count`` 10)
  acking in the callback until the queue is empty, with immediate acks (the
  default) and with ``ack_batch`` 10; then ``--processes`` consumer processes
  sharing the queue (immediate acks);
* latency from publish (another thread, its own connection) to delivery at an
  idle consumer: PostgreSQL wakes on NOTIFY; SQLite polls (default
  ``POLL_INTERVAL`` 1s, and 0.05s).

Scratch databases: a temporary SQLite file; the PostgreSQL database
``bench_tasks_q`` (created if missing, emptied before each run).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

QUEUE_NAME = "bench"
PG_DATABASE = "bench_tasks_q"


def setup_django(database: str, sqlite_path: str | None = None) -> None:
    os.environ["DJANGO_SETTINGS_MODULE"] = "testproject.settings"
    os.environ["DJANGO_DEBUG"] = "0"  # no query log
    os.environ["TQ_DATABASE"] = database
    if database == "sqlite":
        os.environ["SQLITE_PATH"] = sqlite_path or os.environ["SQLITE_PATH"]
    else:
        os.environ["POSTGRES_DB"] = PG_DATABASE
    import django

    django.setup()


def create_schema(database: str) -> None:
    if database == "postgres":
        import psycopg

        with psycopg.connect(
            host=os.environ.get("POSTGRES_HOST", "127.0.0.1"),
            user=os.environ.get("POSTGRES_USER", "postgres"),
            dbname="postgres",
            autocommit=True,
        ) as admin:
            if not admin.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", [PG_DATABASE]
            ).fetchone():
                admin.execute(f'CREATE DATABASE "{PG_DATABASE}"')
    from django.core.management import call_command

    call_command("migrate", run_syncdb=True, verbosity=0)
    from django_tasks_q.models import QueueMessage, WorkerHeartbeat
    from django_tasks_q.models.broker import QueueBinding

    for model in (QueueMessage, WorkerHeartbeat, QueueBinding):
        model.objects.all().delete()


def queue():
    from kombu import Exchange, Queue

    return Queue(QUEUE_NAME, Exchange(QUEUE_NAME, type="direct"), routing_key=QUEUE_NAME)


def connect(**options):
    from django_tasks_q.messaging.connection import broker_connection

    return broker_connection("django://", transport_options=options)


def publish_rate(count: int, in_transaction: bool) -> float:
    from django.db import transaction
    from kombu import Producer

    from django_tasks_q.message import Message

    q = queue()
    with connect() as conn:
        producer = Producer(conn.default_channel)
        q(conn.default_channel).declare()
        encoded = [Message(task="bench.add", args=[i, i]).encode() for i in range(count)]

        def run() -> None:
            for e in encoded:
                producer.publish(
                    e.body,
                    exchange=q.exchange,
                    routing_key=QUEUE_NAME,
                    headers=e.headers,
                    content_type=e.content_type,
                    content_encoding=e.content_encoding,
                    **e.properties,
                )

        start = time.perf_counter()
        if in_transaction:
            with transaction.atomic():
                run()
        else:
            run()
        return count / (time.perf_counter() - start)


def consume(count: int | None, idle: float = 2.0, **options) -> tuple[int, float, float]:
    """Consume and ack until ``count`` messages (or ``idle`` seconds without one).

    Returns (messages, wall-clock time of the first, of the last).
    """
    from kombu import Consumer

    received = 0
    first = last = None

    def on_message(body, message) -> None:
        nonlocal received, first, last
        message.ack()
        received += 1
        last = time.time()
        first = first or last

    with connect(polling_interval=0.05, **options) as conn:
        with Consumer(conn, [queue()], callbacks=[on_message], prefetch_count=10):
            start = time.time()
            while count is None or received < count:
                try:
                    conn.drain_events(timeout=idle)
                except TimeoutError:
                    break
    return received, start, last or start


def consume_processes(count: int, processes: int) -> float:
    env = dict(os.environ)
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--child"], env=env, stdout=subprocess.PIPE, text=True
        )
        for _ in range(processes)
    ]
    got, firsts, lasts = 0, [], []
    for proc in procs:
        out, _ = proc.communicate(timeout=600)
        n, first, last = out.split()
        got, firsts, lasts = got + int(n), [*firsts, float(first)], [*lasts, float(last)]
    if got != count:
        raise SystemExit(f"consumed {got} of {count} messages")
    return count / (max(lasts) - min(firsts))  # first delivery anywhere to last ack


def latency(samples: int, **options) -> tuple[float, float]:
    """Publish-to-delivery seconds at an idle consumer: (p50, max)."""
    from django.db import connections
    from kombu import Consumer, Producer

    delays: list[float] = []
    sent: dict[str, float] = {}
    q = queue()

    def on_message(body, message) -> None:
        delays.append(time.perf_counter() - sent[body["id"]])
        message.ack()

    def send(count: int) -> None:
        with connect() as conn:
            producer = Producer(conn.default_channel)
            for _ in range(count):
                time.sleep(0.15 + (len(sent) % 7) * 0.05)  # land at varied points of the poll
                key = uuid.uuid4().hex
                sent[key] = time.perf_counter()
                producer.publish({"id": key}, exchange=q.exchange, routing_key=QUEUE_NAME)
        connections.close_all()

    with connect(**options) as conn:
        with Consumer(conn, [q], callbacks=[on_message]):
            sender = threading.Thread(target=send, args=(samples,))
            sender.start()
            while len(delays) < samples:
                try:
                    conn.drain_events(timeout=10)
                except TimeoutError:
                    break
            sender.join()
    return statistics.median(delays), max(delays)


def run(database: str, messages: int, processes: int) -> None:
    tmp = tempfile.mkdtemp(prefix="tq-bench-")
    os.environ["SQLITE_PATH"] = str(Path(tmp) / "bench.sqlite3")
    if os.fork() == 0:  # one Django setup per database: a child each
        try:
            setup_django(database, os.environ["SQLITE_PATH"])
            create_schema(database)
            print(f"== django:// on {database} ({messages} messages)")
            print(f"publish, autocommit each      {publish_rate(messages, False):8.0f} msg/s")
            n, first, last = consume(messages)
            print(f"consume+ack, 1 consumer       {n / (last - first):8.0f} msg/s")
            print(f"publish, one transaction      {publish_rate(messages, True):8.0f} msg/s")
            n, first, last = consume(messages, ack_batch=10)
            print(f"consume+ack, ack_batch 10     {n / (last - first):8.0f} msg/s")
            publish_rate(messages, True)
            from django.db import connections

            connections.close_all()
            print(
                f"consume+ack, {processes} processes      {consume_processes(messages, processes):8.0f} msg/s"
            )
            if database == "postgres":
                p50, worst = latency(15, polling_interval=1.0)
                print(
                    f"latency, NOTIFY (poll 1s)     p50 {p50 * 1000:6.1f} ms  max {worst * 1000:6.1f} ms"
                )
            else:
                for interval in (1.0, 0.05):
                    p50, worst = latency(15, polling_interval=interval)
                    print(
                        f"latency, poll {interval:<4}s          p50 {p50 * 1000:6.1f} ms  max {worst * 1000:6.1f} ms"
                    )
            sys.stdout.flush()
        finally:
            os._exit(0)
    os.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        setup_django(os.environ["TQ_DATABASE"])
        print(*consume(None))
        return
    for database in ["sqlite", "postgres"] if args.database == "both" else [args.database]:
        run(database, args.messages, args.processes)


if __name__ == "__main__":
    main()
