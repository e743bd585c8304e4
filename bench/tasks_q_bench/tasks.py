"""A counting no-op for throughput runs and a plain no-op for round trips."""

from __future__ import annotations

import os

from benchcounter import hit

from django_tasks_q import task

QUEUE = os.environ.get("BENCH_QUEUE", "bench_tq")


@task(name="bench.noop", queue=QUEUE)
def noop() -> int:
    hit()
    return 1


@task(name="bench.rt", queue=QUEUE)
def rt() -> int:
    return 1
