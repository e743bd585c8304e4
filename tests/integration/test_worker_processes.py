"""The prefork pool against real ``runworker`` processes: dying children, recycling,
limits, remote control and shutdown (what the command prints: test_worker_command.py).

Supervisor behaviour does not depend on the broker, so most tests run on the
default ``django://`` broker; those where redelivery differs per broker run on each.
"""

from __future__ import annotations

import signal

import pytest

from django_tasks_q import states
from testproject.demo import worker_tasks as wt
from tests.integration.workerproc import (  # noqa: F401  (fixtures)
    WorkerProcess,
    broker_fixture,
    delete_amqp_queues,
    django_broker_fixture,
    meta,
    queued_rows,
    state,
    succeeded,
    wait_until,
)

pytestmark = pytest.mark.timeout(300)


# -- dying children ----------------------------------------------------------------------


def test_a_child_dying_mid_task_fails_it_and_is_replaced(broker, tmp_path):
    queue, path = broker.queue(), str(tmp_path / "runs")
    try:
        with WorkerProcess(broker.url, "-Q", queue, "-c", "1", env=broker.env) as worker:
            worker.wait_ready()
            died = wt.die.apply_async((path, "die"), queue=queue)
            wait_until(lambda: state(died.id) == states.FAILURE, 60, "the task to fail")
            assert meta(died.id)["result"]["exc_type"] == "WorkerLostError"
            after = wt.record.apply_async((path, "after"), queue=queue)
            wait_until(lambda: state(after.id) == states.SUCCESS, 60, "the next task")
            if broker.name == "django":  # the redelivered message is acked, not run again
                wait_until(
                    lambda: queued_rows(queue) == 0, 30, "the dead task's message to be acked"
                )
            assert "was killed by SIGKILL" in worker.output()
        assert [r[1] for r in wt.lines(path, "start")] == ["die", "after"]
    finally:
        delete_amqp_queues(broker, [queue])


def test_reject_on_worker_lost_redelivers_up_to_max_deliveries(broker, tmp_path):
    from django_tasks_q.models import DeadLetter

    queue, path = broker.queue(), str(tmp_path / "runs")
    env = {**broker.env, "TQ_MAX_DELIVERIES": "3"}
    try:
        with WorkerProcess(broker.url, "-Q", queue, "-c", "1", env=env) as worker:
            worker.wait_ready()
            died = wt.die_requeue.apply_async((path, "k"), queue=queue)
            wait_until(
                lambda: state(died.id) == states.FAILURE, 90, "the poison task to be given up"
            )
            assert meta(died.id)["result"]["exc_type"] == "WorkerLostError"
            assert DeadLetter.objects.filter(task_id=died.id, reason="worker_lost").count() == 1
        assert len(wt.lines(path, "start")) == 3
    finally:
        delete_amqp_queues(broker, [queue])


def test_a_task_acked_early_and_lost_is_recorded_lost(django_broker, tmp_path):
    queue, path = django_broker.queue(), str(tmp_path / "runs")
    with WorkerProcess(django_broker.url, "-Q", queue, "-c", "1", env=django_broker.env) as worker:
        worker.wait_ready()
        lost = wt.die_early_ack.apply_async((path, "k"), queue=queue)
        wait_until(lambda: state(lost.id) == states.LOST, 60, "state LOST")
        assert queued_rows(queue) == 0


def test_terminate_revokes_the_running_task_and_replaces_its_process(django_broker, tmp_path):
    queue, path = django_broker.queue(), str(tmp_path / "runs")
    with WorkerProcess(
        django_broker.url, "-Q", queue, "-c", "1", "-l", "info", env=django_broker.env
    ) as worker:
        worker.wait_ready()
        long = wt.record.apply_async((path, "long", 60.0), queue=queue)
        wait_until(lambda: wt.lines(path, "start"), 30, "the long task to start")
        long.revoke(terminate=True, signal="SIGKILL")
        wait_until(lambda: state(long.id) == states.REVOKED, 30, "state REVOKED")
        after = wt.record.apply_async((path, "after"), queue=queue)
        wait_until(lambda: state(after.id) == states.SUCCESS, 60, "the next task")
        assert "terminated with SIGKILL" in worker.output()
    assert [r[1] for r in wt.lines(path, "end")] == ["after"]
    assert state(long.id) == states.REVOKED


# -- recycling and sizing ----------------------------------------------------------------


def test_max_tasks_per_child_replaces_the_process(django_broker):
    queue = django_broker.queue()
    with WorkerProcess(
        django_broker.url,
        "-Q",
        queue,
        "-c",
        "1",
        "--max-tasks-per-child",
        "2",
        env=django_broker.env,
    ) as worker:
        worker.wait_ready()
        results = [wt.pid.apply_async(queue=queue) for _ in range(6)]
        wait_until(lambda: succeeded([r.id for r in results]), 60, "six tasks")
    pids = [meta(r.id)["result"] for r in results]
    assert len(set(pids)) == 3, pids
    assert pids[0] == pids[1] and pids[2] == pids[3] and pids[4] == pids[5]


def test_max_memory_per_child_replaces_the_process(django_broker):
    queue = django_broker.queue()
    # A fresh child's size, measured in a real child (not this test process, which grows).
    with WorkerProcess(
        django_broker.url, "-Q", queue, "-c", "1", env=django_broker.env
    ) as worker:
        worker.wait_ready()
        probe = wt.hoard.apply_async((0,), queue=queue)
        wait_until(lambda: succeeded([probe.id]), 60, "the probe task")
    _, base_kib, frozen = meta(probe.id)["result"]
    assert frozen > 10_000  # what the child inherited (Django, the app) is frozen for the GC
    # Each task keeps 40 MB: a child crosses the limit on its second task, and makes way.
    limit = base_kib + 60_000
    with WorkerProcess(
        django_broker.url,
        "-Q",
        queue,
        "-c",
        "1",
        "--max-memory-per-child",
        str(limit),
        "-l",
        "info",
        env=django_broker.env,
    ) as worker:
        worker.wait_ready()
        results = [wt.hoard.apply_async((40_000,), queue=queue) for _ in range(4)]
        wait_until(lambda: succeeded([r.id for r in results]), 60, "four tasks")
        assert "max-memory-per-child" in worker.output()
    runs = [meta(r.id)["result"][:2] for r in results]
    assert len({pid for pid, _ in runs}) >= 2, (base_kib, limit, runs)
    # No task ran in a process that had already crossed the limit: one crossing per process.
    for pid in {pid for pid, _ in runs}:
        assert sum(rss > limit for p, rss in runs if p == pid) <= 1, (base_kib, limit, runs)


def test_a_long_task_does_not_starve_the_messages_its_process_prefetched(django_broker, tmp_path):
    queue, path = django_broker.queue(), str(tmp_path / "runs")
    with WorkerProcess(
        django_broker.url,
        "-Q",
        queue,
        "-c",
        "2",
        "--prefetch-multiplier",
        "4",
        env=django_broker.env,
    ) as worker:
        long = wt.record.apply_async((path, "long", 8.0), queue=queue)
        shorts = [wt.record.apply_async((path, f"s{i}"), queue=queue) for i in range(4)]
        worker.wait_ready()
        wait_until(
            lambda: succeeded([s.id for s in shorts]), 7, "the short tasks, while the long one runs"
        )
        assert state(long.id) != states.SUCCESS
        wait_until(lambda: state(long.id) == states.SUCCESS, 30, "the long task")


def test_autoscale_grows_the_pool_under_load(django_broker, tmp_path):
    queue, path = django_broker.queue(), str(tmp_path / "runs")
    with WorkerProcess(
        django_broker.url, "-Q", queue, "--autoscale", "3,1", "-l", "info", env=django_broker.env
    ) as worker:
        worker.wait_ready()
        results = [wt.record.apply_async((path, str(i), 4.0), queue=queue) for i in range(3)]
        wait_until(
            lambda: len({r[2] for r in wt.lines(path, "start")}) == 3,
            20,
            "three processes running tasks",
        )
        wait_until(lambda: succeeded([r.id for r in results]), 30, "the tasks")
        assert "Autoscale: growing to 3 processes" in worker.output()


# -- remote control ----------------------------------------------------------------------


def test_inspect_and_control_reach_a_prefork_worker(django_broker, tmp_path):
    from django_tasks_q.control import control

    queue, path = django_broker.queue(), str(tmp_path / "runs")
    with WorkerProcess(
        django_broker.url, "-Q", queue, "-c", "1", "-n", "inspected@%h", env=django_broker.env
    ) as worker:
        worker.wait_ready()
        name = next(
            line.split()[0] for line in worker.output().splitlines() if line.endswith(" ready.")
        )
        long = wt.record.apply_async((path, "long", 6.0), queue=queue)
        later = wt.record.apply_async((path, "later"), queue=queue, countdown=30)
        wait_until(lambda: wt.lines(path, "start"), 30, "the long task to start")
        inspect = control.inspect(destination=[name], timeout=3)
        active = wait_until(lambda: inspect.active().get(name), 15, "inspect active")
        assert [t["id"] for t in active] == [long.id]
        scheduled = wait_until(lambda: inspect.scheduled().get(name), 15, "inspect scheduled")
        assert [s["request"]["id"] for s in scheduled] == [later.id]
        stats = inspect.stats()[name]
        assert (
            stats["pool"]["implementation"] == "prefork" and stats["pool"]["max-concurrency"] == 1
        )
        assert "wt.pid" in inspect.registered()[name]

        assert control.pool_grow(1, destination=[name], reply=True, timeout=3)
        wait_until(
            lambda: inspect.stats().get(name, {}).get("pool", {}).get("max-concurrency") == 2,
            15,
            "pool_grow",
        )
        other = django_broker.queue()
        control.add_consumer(other, destination=[name], reply=True, timeout=3)
        moved = wt.record.apply_async((path, "other-queue"), queue=other)
        wait_until(lambda: state(moved.id) == states.SUCCESS, 30, "a task on the added queue")
        later.revoke()
        wait_until(lambda: state(later.id) == states.REVOKED, 10, "the revoke")


# -- shutdown ----------------------------------------------------------------------------


def test_warm_shutdown_gives_back_prefetched_messages(django_broker, tmp_path):
    queue, path = django_broker.queue(), str(tmp_path / "runs")
    worker = WorkerProcess(django_broker.url, "-Q", queue, "-c", "1", env=django_broker.env)
    with worker:
        worker.wait_ready()
        long = wt.record.apply_async((path, "long", 3.0), queue=queue)
        shorts = [wt.record.apply_async((path, f"s{i}", 0.5), queue=queue) for i in range(3)]
        wait_until(lambda: wt.lines(path, "start"), 30, "a task to start")
        worker.send(signal.SIGTERM)
        assert worker.wait(30) == 0
    assert state(long.id) == states.SUCCESS
    with WorkerProcess(
        django_broker.url, "-Q", queue, "-c", "1", "--burst", env=django_broker.env
    ) as again:
        assert again.wait(60) == 0
    assert succeeded([s.id for s in shorts])
    assert sorted(r[1] for r in wt.lines(path, "end")) == ["long", "s0", "s1", "s2"]


def test_a_second_signal_is_a_cold_shutdown_that_requeues_the_running_task(broker, tmp_path):
    queue, path = broker.queue(), str(tmp_path / "runs")
    try:
        with WorkerProcess(broker.url, "-Q", queue, "-c", "1", env=broker.env) as worker:
            worker.wait_ready()
            task = wt.record.apply_async((path, "k", 2.0), queue=queue)
            wait_until(lambda: wt.lines(path, "start"), 30, "the task to start")
            worker.send(signal.SIGTERM)
            wait_until(lambda: "Warm shutdown" in worker.output(), 10, "the warm shutdown")
            worker.send(signal.SIGTERM)
            assert worker.wait(15) == 1
        assert state(task.id) != states.SUCCESS
        with WorkerProcess(broker.url, "-Q", queue, "-c", "1", env=broker.env) as again:
            again.wait_ready()
            wait_until(lambda: state(task.id) == states.SUCCESS, 60, "the requeued task")
        starts = wt.lines(path, "start")
        assert len(starts) == 2 and starts[1][3] == "1"  # run again, as a redelivery
    finally:
        delete_amqp_queues(broker, [queue])


@pytest.mark.parametrize("pool", ["threads", "solo"])
def test_threads_and_solo_pools_stop_warm_then_cold(django_broker, tmp_path, pool):
    queue, path = django_broker.queue(), str(tmp_path / "runs")
    args = ["-Q", queue, "-P", pool, "-c", "2"]
    with WorkerProcess(django_broker.url, *args, env=django_broker.env) as worker:
        worker.wait_ready()
        warm = wt.record.apply_async((path, "warm", 1.5), queue=queue)
        wait_until(lambda: wt.lines(path, "start"), 30, "the task to start")
        worker.send(signal.SIGTERM)
        assert worker.wait(30) == 0
    assert state(warm.id) == states.SUCCESS
    with WorkerProcess(django_broker.url, *args, env=django_broker.env) as worker:
        worker.wait_ready()
        cold = wt.record.apply_async((path, "cold", 30.0), queue=queue)
        wait_until(lambda: len(wt.lines(path, "start")) == 2, 30, "the long task to start")
        worker.send(signal.SIGTERM)
        wait_until(lambda: "Warm shutdown" in worker.output(), 10, "the warm shutdown")
        worker.send(signal.SIGTERM)
        assert worker.wait(15) == 1
    assert queued_rows(queue) == 1  # the interrupted task is back in its queue
    assert state(cold.id) != states.SUCCESS
