"""The worker's promises under load and crashes, against real ``runworker`` processes.

Every scenario runs on each broker: ``django://`` (SQLite, or PostgreSQL with
``TQ_DATABASE=postgres``), ``redis://`` and ``amqp://``. Executions are counted
through a side channel (a file each task appends a line to), never through the
worker under test.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections import Counter, defaultdict

import pytest

from django_tasks_q import states
from testproject.demo import worker_tasks as wt
from tests.integration.workerproc import (  # noqa: F401  (fixtures)
    WorkerProcess,
    broker_fixture,
    delete_amqp_queues,
    wait_until,
)

pytestmark = pytest.mark.timeout(600)


def results(ids: list[str]) -> dict[str, str]:
    from django_tasks_q.models import TaskResult

    return dict(TaskResult.objects.filter(task_id__in=ids).values_list("task_id", "state"))


def count_in(ids: list[str], state: str) -> int:
    return sum(1 for s in results(ids).values() if s == state)


def assert_duplicates_flagged(path: str, event: str) -> None:
    """A key that ran twice ran again only as a flagged redelivery."""
    by_key: dict[str, list[list[str]]] = defaultdict(list)
    for row in wt.lines(path, event):
        by_key[row[1]].append(row)
    for key, rows in by_key.items():
        rows.sort(key=lambda r: float(r[4]))
        assert all(r[3] == "1" for r in rows[1:]), (
            f"{key} ran again without being a redelivery: {rows}"
        )


def test_a_thousand_tasks_each_run_exactly_once(broker, tmp_path):
    total = 1000
    queue, path = broker.queue(), str(tmp_path / "runs")
    try:
        with WorkerProcess(broker.url, "-Q", queue, "-c", "4", env=broker.env) as worker:
            worker.wait_ready()
            ids = [wt.record.apply_async((path, str(i)), queue=queue).id for i in range(total)]
            wait_until(lambda: count_in(ids, states.SUCCESS) == total, 240, f"{total} successes")
        starts = Counter(row[1] for row in wt.lines(path, "start"))
        assert len(starts) == total
        assert set(starts.values()) == {1}
    finally:
        delete_amqp_queues(broker, [queue])


def test_sigkill_of_the_whole_worker_loses_no_acks_late_task(broker, tmp_path):
    total = 200
    queue, path = broker.queue(), str(tmp_path / "runs")
    try:
        ids = [wt.record.apply_async((path, str(i), 0.05), queue=queue).id for i in range(total)]
        with WorkerProcess(broker.url, "-Q", queue, "-c", "4", env=broker.env) as first:
            first.wait_ready()
            wait_until(lambda: len(wt.lines(path, "end")) >= 40, 120, "40 finished tasks")
            first.kill_group()
        assert count_in(ids, states.SUCCESS) < total
        with WorkerProcess(broker.url, "-Q", queue, "-c", "4", env=broker.env) as second:
            second.wait_ready()
            wait_until(
                lambda: count_in(ids, states.SUCCESS) == total,
                240,
                f"{total} successes after restart",
            )
        assert {row[1] for row in wt.lines(path, "end")} == {str(i) for i in range(total)}
        assert_duplicates_flagged(path, "start")
        assert_duplicates_flagged(path, "end")
    finally:
        delete_amqp_queues(broker, [queue])


def test_sigterm_lets_running_tasks_finish_and_exits_0(broker, tmp_path):
    total = 20
    queue, path = broker.queue(), str(tmp_path / "runs")
    try:
        worker = WorkerProcess(
            broker.url, "-Q", queue, "-c", str(total), "--prefetch-multiplier", "1", env=broker.env
        )
        with worker:
            worker.wait_ready()
            ids = [wt.record.apply_async((path, str(i), 3.0), queue=queue).id for i in range(total)]
            wait_until(lambda: len(wt.lines(path, "start")) == total, 60, f"{total} running tasks")
            worker.send(signal.SIGTERM)
            assert worker.wait(60) == 0, worker.output()
        assert count_in(ids, states.SUCCESS) == total
        assert sorted(int(r[1]) for r in wt.lines(path, "end")) == list(range(total))
    finally:
        delete_amqp_queues(broker, [queue])


def test_a_task_longer_than_every_liveness_timeout_runs_once(broker, tmp_path):
    # HEARTBEAT_TIMEOUT is 6s here; the task runs 12s while a second worker waits for work.
    queue, path = broker.queue(), str(tmp_path / "runs")
    try:
        with WorkerProcess(broker.url, "-Q", queue, "-c", "1", "-n", "a@%h", env=broker.env) as a, \
                WorkerProcess(broker.url, "-Q", queue, "-c", "1", "-n", "b@%h", env=broker.env) as b:  # fmt: skip
            a.wait_ready()
            b.wait_ready()
            result = wt.record.apply_async((path, "long", 12.0), queue=queue)
            wait_until(lambda: count_in([result.id], states.SUCCESS) == 1, 60, "the long task")
            assert a.proc.poll() is None and b.proc.poll() is None
        assert len(wt.lines(path, "start")) == 1
    finally:
        delete_amqp_queues(broker, [queue])


def test_hard_time_limit_kills_and_replaces_the_process(broker, tmp_path):
    from django_tasks_q.models import TaskResult

    queue, path = broker.queue(), str(tmp_path / "runs")
    try:
        with WorkerProcess(broker.url, "-Q", queue, "-c", "1", env=broker.env) as worker:
            worker.wait_ready()
            limited = wt.hard_limited.apply_async(queue=queue)
            after = [wt.record.apply_async((path, str(i)), queue=queue).id for i in range(3)]
            wait_until(
                lambda: count_in([limited.id], states.FAILURE) == 1,
                60,
                "the time-limited task to fail",
            )
            wait_until(lambda: count_in(after, states.SUCCESS) == 3, 60, "the tasks after it")
            row = TaskResult.objects.get(task_id=limited.id)
            assert row.result["exc_type"] == "TimeLimitExceeded"
            assert "killed and replaced" in worker.output()
    finally:
        delete_amqp_queues(broker, [queue])


def _countdowns(broker, tmp_path, spread: float, total: int = 100) -> None:
    from django.test import override_settings

    from tests.integration.workerproc import settings_for

    queue, path = broker.queue(), str(tmp_path / "runs")
    horizon = "5" if spread < 60 else "60"
    env = {**broker.env, "TQ_ETA_HORIZON": horizon}
    rng = random.Random(6)
    try:
        with override_settings(TASKS_Q=settings_for(broker, ETA_HORIZON=float(horizon))):
            first = WorkerProcess(broker.url, "-Q", queue, "-c", "2", env=env).start()
            try:
                first.wait_ready()
                start = time.time()
                ids = []
                for i in range(total):
                    countdown = 1 + rng.random() * (spread - 1)
                    eta = time.time() + countdown
                    ids.append(
                        wt.on_time.apply_async(
                            (path, str(i), eta), countdown=countdown, queue=queue
                        ).id
                    )
                wait_until(
                    lambda: time.time() - start >= spread / 2, spread, "the middle of the spread"
                )
                first.send(signal.SIGTERM)
                assert first.wait(60) == 0, first.output()
            finally:
                first.stop()
            with WorkerProcess(broker.url, "-Q", queue, "-c", "2", env=env) as second:
                second.wait_ready()
                wait_until(
                    lambda: count_in(ids, states.SUCCESS) == total,
                    spread + 60,
                    f"{total} delayed tasks",
                )
        ran = [row[1].split(":") for row in wt.lines(path, "ran")]
        assert Counter(key for key, _ in ran) == Counter({str(i): 1 for i in range(total)})
        lateness = [float(late) for _, late in ran]
        assert min(lateness) >= -0.002, f"a task ran {-min(lateness):.3f}s early"
    finally:
        delete_amqp_queues(broker, [queue])


def test_countdown_tasks_run_once_never_early_across_a_restart(broker, tmp_path):
    _countdowns(broker, tmp_path, spread=float(os.environ.get("TQ_WORKER_SPREAD", "20")))


@pytest.mark.slow
def test_countdown_tasks_over_90_seconds_across_a_restart(broker, tmp_path):
    _countdowns(broker, tmp_path, spread=90.0)
