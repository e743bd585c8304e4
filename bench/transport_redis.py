"""Our redis:// transport against kombu's stock Redis transport, on the same Redis.

    .venv/bin/python bench/transport_redis.py [--messages 20000] [--url redis://127.0.0.1:6379/3]

Measures, in one process on one connection each:

* publish rate: ``Producer.publish`` one message at a time (one round trip each),
  and inside ``Producer.batch`` (pipelined);
* consume+ack rate: ``drain_events`` with an ack in the callback, until the queue
  is empty.  Ours claims ``claim_batch`` messages per round trip and batches the
  acks; the stock transport does BRPOP, then records the message as unacked, then
  acks, per message.

Each measurement uses a fresh queue name and deletes only its own keys, so the
database may be shared (nothing is flushed).
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import redis  # noqa: E402
from kombu import Connection, Consumer, Exchange, Producer, Queue  # noqa: E402

from django_tasks_q.messaging.redis import Transport  # noqa: E402

BODY = [[2, 2], {}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}]


def headers() -> dict:
    task_id = str(uuid.uuid4())
    return {"lang": "py", "task": "bench.add", "id": task_id, "root_id": task_id,
            "parent_id": None, "group": None, "retries": 0, "eta": None, "expires": None,
            "timelimit": [None, None], "argsrepr": "(2, 2)", "kwargsrepr": "{}"}  # fmt: skip


def connect(url: str, ours: bool, **options) -> Connection:
    return Connection(url, transport=Transport if ours else "redis", transport_options=options)


def new_queue() -> Queue:
    name = f"bench-transport-{uuid.uuid4().hex[:8]}"
    return Queue(name, Exchange(name, type="direct"), routing_key=name)


def drop(client: redis.Redis, queue: Queue) -> None:
    """Delete ``queue``'s lists, wake stream and binding tables."""
    names = [
        k for pattern in (f"{queue.name}*", f"*{queue.name}") for k in client.scan_iter(pattern)
    ]
    if names:
        client.delete(*names)


def publish_rate(url: str, ours: bool, count: int, queue: Queue, batch: int = 0) -> float:
    """Messages per second through ``Producer.publish`` (in ``producer.batch`` if batch)."""
    with connect(url, ours) as conn:
        producer = Producer(conn.default_channel, serializer="json")
        queue(conn.default_channel).declare()
        name = queue.name
        start = time.perf_counter()
        if batch:
            with producer.batch(max_size=batch):
                for _ in range(count):
                    producer.publish(BODY, exchange=name, routing_key=name, headers=headers())
        else:
            for _ in range(count):
                producer.publish(BODY, exchange=name, routing_key=name, headers=headers())
        return count / (time.perf_counter() - start)


def consume_rate(url: str, ours: bool, count: int, queue: Queue, prefetch: int) -> float:
    received = 0

    def on_message(body, message) -> None:
        nonlocal received
        received += 1
        message.ack()

    with connect(url, ours) as conn:
        with Consumer(
            conn, [queue], callbacks=[on_message], accept=["json"], prefetch_count=prefetch
        ):
            start = time.perf_counter()
            while received < count:
                try:
                    conn.drain_events(timeout=5)
                except TimeoutError:
                    which = "ours" if ours else "stock"
                    raise SystemExit(f"{which}: stalled after {received} of {count}") from None
            elapsed = time.perf_counter() - start
    return count / elapsed


def fill(url: str, count: int, queue: Queue) -> None:
    with connect(url, True) as conn:
        producer = Producer(conn.default_channel, serializer="json")
        queue(conn.default_channel).declare()
        with producer.batch(max_size=500):
            for _ in range(count):
                producer.publish(
                    BODY, exchange=queue.name, routing_key=queue.name, headers=headers()
                )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--url", default="redis://127.0.0.1:6379/3")
    args = parser.parse_args()
    n, url = args.messages, args.url
    client = redis.Redis.from_url(url)

    def measure(fun, ours: bool, *args, prefilled: bool = False, **kwargs) -> float:
        queue = new_queue()
        try:
            if prefilled:
                fill(url, n, queue)
            return fun(url, ours, n, queue, *args, **kwargs)
        finally:
            drop(client, queue)

    rows = [
        ("publish msg/s (one per call)",
         measure(publish_rate, True), measure(publish_rate, False)),
        ("publish msg/s (producer.batch 500)",
         measure(publish_rate, True, batch=500), measure(publish_rate, False, batch=500)),
    ]  # fmt: skip
    for prefetch, label in ((0, "claim_batch 10"), (100, "prefetch 100")):
        ours = measure(consume_rate, True, prefetch, prefilled=True)
        stock = measure(consume_rate, False, prefetch, prefilled=True)
        rows.append((f"consume+ack msg/s ({label})", ours, stock))
    client.close()

    print(f"{n} messages, Redis at {url}, redis-py {redis.__version__}")
    print(f"{'':36} {'ours':>10} {'stock':>10} {'ratio':>7}")
    for label, ours, stock in rows:
        print(f"{label:36} {ours:10,.0f} {stock:10,.0f} {ours / stock:6.2f}x")


if __name__ == "__main__":
    main()
