"""The floor on this machine: what the building blocks cost, with no task system around them.

``python -m bench.floor [--full]`` prints the figures (and saves them as JSON in
bench/results/). Run it with the repo's .venv from the repo root.

* Redis list operations, one round trip each and pipelined/batched;
* a bare pop-and-run loop in 2 processes (the ceiling for a Redis worker at c=2);
* protocol-v2 encode+decode of one message (``django_tasks_q.message.Message``);
* an indexed ``UPDATE ... RETURNING`` claim on PostgreSQL, on a table shaped like
  ``QueueMessage``, empty and (``--full``) with 1,000,000 waiting rows.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime

from . import services

REDIS_DB = 15  # bench/transport_redis.py uses 7; the adapters use 8-14
PG_DB = "bench_floor"
TABLE = "floor_queue_message"
QUEUE = "floor:q"


def per_op(label: str, count: int, fn: Callable[[], None], results: dict) -> None:
    """Run ``fn`` (which does ``count`` operations) and record microseconds per operation."""
    started = time.perf_counter()
    fn()
    seconds = time.perf_counter() - started
    us = 1e6 * seconds / count
    results[label] = {"us_per_op": us, "ops_per_s": count / seconds}
    print(f"  {label:<58} {us:9.2f} µs/op {count / seconds:12,.0f} ops/s", flush=True)


# -- Redis -------------------------------------------------------------------------
def redis_floor(n: int, results: dict) -> None:
    r = services.redis_client(REDIS_DB)
    r.flushdb()
    payload = b"x" * 600  # about the size of a small protocol-v2 message on the wire
    print("Redis list operations (one client, loopback):")
    per_op(
        "LPUSH, one round trip each",
        n,
        lambda: [r.lpush(QUEUE, payload) for _ in range(n)],
        results,
    )
    per_op("RPOP, one round trip each", n, lambda: [r.rpop(QUEUE) for _ in range(n)], results)
    for _ in range(n):
        r.lpush(QUEUE, payload)
    per_op("BLMOVE queue -> in-flight, one round trip each", n,
           lambda: [r.blmove(QUEUE, "floor:inflight", 1, "RIGHT", "LEFT") for _ in range(n)], results)  # fmt: skip
    r.delete("floor:inflight")

    def pipelined_push() -> None:
        for start in range(0, n, 100):
            pipe = r.pipeline(transaction=False)
            for _ in range(min(100, n - start)):
                pipe.lpush(QUEUE, payload)
            pipe.execute()

    per_op("LPUSH, pipelined 100 per round trip", n, pipelined_push, results)
    per_op("RPOP count=100 (100 messages per round trip)", n,
           lambda: [r.rpop(QUEUE, 100) for _ in range(0, n, 100)], results)  # fmt: skip
    r.flushdb()


def _pop_loop(db: int, count: int, batch: int) -> None:
    r = services.redis_client(db)
    done = 0
    while done < count:
        if batch == 1:
            msg = r.blmove(QUEUE, f"floor:inflight:{os.getpid()}", 1, "RIGHT", "LEFT")
            if msg is None:
                return
            json.loads(msg)
            r.lrem(f"floor:inflight:{os.getpid()}", 1, msg)  # ack
            done += 1
        else:
            got = r.lmpop(1, QUEUE, direction="RIGHT", count=batch)
            if not got:
                return
            for msg in got[1]:
                json.loads(msg)
            done += len(got[1])


def pop_and_run(n: int, batch: int, results: dict) -> None:
    r = services.redis_client(REDIS_DB)
    r.flushdb()
    body = json.dumps({"task": "bench.noop", "args": [], "kwargs": {}}).encode()
    for start in range(0, n, 1000):
        r.lpush(QUEUE, *([body] * min(1000, n - start)))
    procs = [multiprocessing.Process(target=_pop_loop, args=(REDIS_DB, n, batch)) for _ in range(2)]
    label = ("2 processes: BLMOVE + LREM ack per message" if batch == 1
             else f"2 processes: LMPOP {batch} per round trip")  # fmt: skip

    def run() -> None:
        for p in procs:
            p.start()
        for p in procs:
            p.join()

    per_op(label, n, run, results)
    r.flushdb()


# -- protocol v2 -------------------------------------------------------------------
def message_floor(n: int, results: dict) -> None:
    from django_tasks_q.message import Message

    accept = {"application/json"}
    print("Protocol-v2 message (django_tasks_q.message.Message, JSON):")

    def encode_decode() -> None:
        for _ in range(n):
            enc = Message(task="bench.noop", args=[1, "a"], kwargs={"k": 2}).encode()
            Message.decode(enc.body, enc.content_type, enc.content_encoding, enc.headers,
                           enc.properties, accept)  # fmt: skip

    def envelope() -> None:
        # As kombu's virtual transports carry it: headers and properties in a JSON envelope.
        for _ in range(n):
            enc = Message(task="bench.noop", args=[1, "a"], kwargs={"k": 2}).encode()
            wire = json.dumps({"body": enc.body.decode() if isinstance(enc.body, bytes) else enc.body,
                               "headers": enc.headers, "properties": enc.properties,
                               "content-type": enc.content_type,
                               "content-encoding": enc.content_encoding})  # fmt: skip
            env = json.loads(wire)
            Message.decode(env["body"], env["content-type"], env["content-encoding"], env["headers"],
                           env["properties"], accept)  # fmt: skip

    per_op("encode + decode (body, headers as objects)", n, encode_decode, results)
    per_op("encode + decode inside a JSON envelope", n, envelope, results)


# -- PostgreSQL --------------------------------------------------------------------
SCHEMA = f"""
DROP TABLE IF EXISTS {TABLE};
CREATE TABLE {TABLE} (
    id bigserial PRIMARY KEY,
    queue varchar(200) NOT NULL,
    payload jsonb NOT NULL,
    priority smallint NOT NULL DEFAULT 0,
    visible_at timestamptz NOT NULL DEFAULT now(),
    created_at timestamptz NOT NULL DEFAULT now(),
    owner varchar(255),
    reserved_at timestamptz,
    delivery_count integer NOT NULL DEFAULT 0,
    task_id varchar(255)
);
CREATE INDEX {TABLE}_ready ON {TABLE} (queue, priority DESC, visible_at, id) WHERE owner IS NULL;
CREATE INDEX {TABLE}_owner ON {TABLE} (owner);
CREATE INDEX {TABLE}_task ON {TABLE} (task_id);
"""

CLAIM = f"""
UPDATE {TABLE} SET owner = %s, reserved_at = now(), delivery_count = delivery_count + 1
WHERE id IN (
    SELECT id FROM {TABLE}
    WHERE queue = %s AND owner IS NULL AND visible_at <= now()
    ORDER BY priority DESC, visible_at, id
    LIMIT %s FOR UPDATE SKIP LOCKED
) RETURNING id, payload
"""


def pg_floor(n: int, backlog: int, results: dict) -> None:
    services.pg_create(PG_DB)
    payload = json.dumps({"body": "x" * 400, "headers": {"task": "bench.noop"}})
    with services.pg_connect(PG_DB) as conn:
        conn.execute(SCHEMA)
        if backlog:
            started = time.perf_counter()
            conn.execute(
                f"INSERT INTO {TABLE} (queue, payload, task_id) "
                f"SELECT 'default', %s::jsonb, 'id-' || g FROM generate_series(1, %s) g",
                (payload, backlog),
            )
            conn.execute(f"VACUUM ANALYZE {TABLE}")
            print(f"  (loaded {backlog:,} waiting rows in {time.perf_counter() - started:.1f} s)")
        print(f"PostgreSQL claim, {backlog:,} rows waiting (autocommit: one commit per statement):")

        def push(count: int) -> None:
            for i in range(count):
                conn.execute(f"INSERT INTO {TABLE} (queue, payload, task_id) VALUES ('default', %s, %s)",
                             (payload, f"t{i}"))  # fmt: skip

        tag = f"backlog {backlog:,}"
        per_op(f"[{tag}] INSERT one message", n, lambda: push(n), results)

        def claim_ack(batch: int) -> None:
            for _ in range(0, n, batch):
                rows = conn.execute(CLAIM, ("floor-worker", "default", batch)).fetchall()
                ids = [r[0] for r in rows]
                conn.execute(f"DELETE FROM {TABLE} WHERE id = ANY(%s)", (ids,))

        def claim_only() -> None:
            for _ in range(n):
                conn.execute(CLAIM, ("floor-worker", "default", 1)).fetchall()

        per_op(f"[{tag}] claim 1 (UPDATE ... RETURNING)", n, claim_only, results)
        conn.execute(f"UPDATE {TABLE} SET owner = NULL WHERE owner IS NOT NULL")
        per_op(f"[{tag}] claim 1 + ack (DELETE), per message", n, lambda: claim_ack(1), results)
        push(n)
        per_op(f"[{tag}] claim 100 + ack 100, per message", n, lambda: claim_ack(100), results)
        started = time.perf_counter()
        for _ in range(200):
            conn.execute(CLAIM, ("floor-worker", "empty-queue", 1)).fetchall()
        us = 1e6 * (time.perf_counter() - started) / 200
        results[f"[{tag}] claim on an empty queue (idle poll)"] = {"us_per_op": us}
        print(f"  {'[' + tag + '] claim on an empty queue (idle poll)':<58} {us:9.2f} µs/op")
        conn.execute(f"DROP TABLE {TABLE}")


def run(full: bool = False, n: int | None = None, pg_n: int = 2_000) -> dict:
    """Every floor figure (label -> {"us_per_op", "ops_per_s"}); ``full`` adds the 1M-row claim.

    ``n`` operations per Redis and JSON figure (default 5,000, 20,000 when ``full``),
    ``pg_n`` per PostgreSQL figure.
    """
    n = n or (20_000 if full else 5_000)
    results: dict = {}
    redis_floor(n, results)
    pop_and_run(n, 1, results)
    pop_and_run(n * 5, 100, results)
    message_floor(n, results)
    pg_floor(min(n, pg_n), 0, results)
    if full:
        pg_floor(pg_n, 1_000_000, results)
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.floor", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument(
        "--full", action="store_true", help="more iterations and the 1,000,000-row claim"
    )
    args = p.parse_args(argv)
    results = run(args.full)
    from .suite import RESULTS_DIR

    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / f"floor-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.json"
    out.write_text(json.dumps(results, indent=1))
    print(f"saved {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
