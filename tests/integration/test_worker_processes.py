"""The prefork pool against real ``runworker`` processes: dying children, recycling,
limits, remote control, shutdown, and what the command prints.

Supervisor behaviour does not depend on the broker, so most tests run on the
default ``django://`` broker; those where redelivery differs per broker run on each.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from django.test import override_settings

from django_tasks_q import states
from django_tasks_q.results import get_store
from testproject.demo import worker_tasks as wt
from tests import services
from tests.integration.workerproc import (  # noqa: F401  (fixtures)
    ROOT,
    Broker,
    WorkerProcess,
    broker_fixture,
    delete_amqp_queues,
    make_broker,
    settings_for,
    wait_until,
)

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def django_broker(transactional_db):
    chosen = make_broker("django")
    with override_settings(TASKS_Q=settings_for(chosen)):
        yield chosen


def state(task_id: str) -> str:
    return get_store().get_task_meta(task_id)["status"]


def meta(task_id: str) -> dict:
    return get_store().get_task_meta(task_id)


def succeeded(ids: list[str]) -> bool:
    return all(state(i) == states.SUCCESS for i in ids)


def queued_rows(queue: str) -> int:
    from django_tasks_q.models import QueueMessage

    return QueueMessage.objects.filter(queue=queue).count()


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
                wait_until(lambda: queued_rows(queue) == 0, 30, "the dead task's message to be acked")
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
            wait_until(lambda: state(died.id) == states.FAILURE, 90, "the poison task to be given up")
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
    with WorkerProcess(django_broker.url, "-Q", queue, "-c", "1", "-l", "info", env=django_broker.env) as worker:
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
    with WorkerProcess(django_broker.url, "-Q", queue, "-c", "1", "--max-tasks-per-child", "2", env=django_broker.env) as worker:
        worker.wait_ready()
        results = [wt.pid.apply_async(queue=queue) for _ in range(6)]
        wait_until(lambda: succeeded([r.id for r in results]), 60, "six tasks")
    pids = [meta(r.id)["result"] for r in results]
    assert len(set(pids)) == 3, pids
    assert pids[0] == pids[1] and pids[2] == pids[3] and pids[4] == pids[5]


def test_max_memory_per_child_replaces_the_process(django_broker):
    queue = django_broker.queue()
    import psutil

    base_kib = psutil.Process().memory_info().rss // 1024
    limit = base_kib + 60_000
    with WorkerProcess(django_broker.url, "-Q", queue, "-c", "1", "--max-memory-per-child", str(limit), "-l", "info", env=django_broker.env) as worker:
        worker.wait_ready()
        results = [wt.hoard.apply_async((40_000,), queue=queue) for _ in range(4)]
        wait_until(lambda: succeeded([r.id for r in results]), 60, "four tasks")
        assert "max-memory-per-child" in worker.output()
    assert len({meta(r.id)["result"] for r in results}) >= 2


def test_a_long_task_does_not_starve_the_messages_its_process_prefetched(django_broker, tmp_path):
    queue, path = django_broker.queue(), str(tmp_path / "runs")
    with WorkerProcess(django_broker.url, "-Q", queue, "-c", "2", "--prefetch-multiplier", "4", env=django_broker.env) as worker:
        long = wt.record.apply_async((path, "long", 8.0), queue=queue)
        shorts = [wt.record.apply_async((path, f"s{i}"), queue=queue) for i in range(4)]
        worker.wait_ready()
        wait_until(lambda: succeeded([s.id for s in shorts]), 7, "the short tasks, while the long one runs")
        assert state(long.id) != states.SUCCESS
        wait_until(lambda: state(long.id) == states.SUCCESS, 30, "the long task")


def test_autoscale_grows_the_pool_under_load(django_broker, tmp_path):
    queue, path = django_broker.queue(), str(tmp_path / "runs")
    with WorkerProcess(django_broker.url, "-Q", queue, "--autoscale", "3,1", "-l", "info", env=django_broker.env) as worker:
        worker.wait_ready()
        results = [wt.record.apply_async((path, str(i), 4.0), queue=queue) for i in range(3)]
        wait_until(lambda: len({r[2] for r in wt.lines(path, "start")}) == 3, 20, "three processes running tasks")
        wait_until(lambda: succeeded([r.id for r in results]), 30, "the tasks")
        assert "Autoscale: growing to 3 processes" in worker.output()


# -- remote control ----------------------------------------------------------------------


def test_inspect_and_control_reach_a_prefork_worker(django_broker, tmp_path):
    from django_tasks_q.control import control

    queue, path = django_broker.queue(), str(tmp_path / "runs")
    with WorkerProcess(django_broker.url, "-Q", queue, "-c", "1", "-n", "inspected@%h", env=django_broker.env) as worker:
        worker.wait_ready()
        name = next(line.split()[0] for line in worker.output().splitlines() if line.endswith(" ready."))
        long = wt.record.apply_async((path, "long", 6.0), queue=queue)
        later = wt.record.apply_async((path, "later"), queue=queue, countdown=30)
        wait_until(lambda: wt.lines(path, "start"), 30, "the long task to start")
        inspect = control.inspect(destination=[name], timeout=3)
        active = wait_until(lambda: inspect.active().get(name), 15, "inspect active")
        assert [t["id"] for t in active] == [long.id]
        scheduled = wait_until(lambda: inspect.scheduled().get(name), 15, "inspect scheduled")
        assert [s["request"]["id"] for s in scheduled] == [later.id]
        stats = inspect.stats()[name]
        assert stats["pool"]["implementation"] == "prefork" and stats["pool"]["max-concurrency"] == 1
        assert "wt.pid" in inspect.registered()[name]

        assert control.pool_grow(1, destination=[name], reply=True, timeout=3)
        wait_until(lambda: inspect.stats().get(name, {}).get("pool", {}).get("max-concurrency") == 2, 15, "pool_grow")
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
    with WorkerProcess(django_broker.url, "-Q", queue, "-c", "1", "--burst", env=django_broker.env) as again:
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


# -- what the command writes ---------------------------------------------------------------


def test_heartbeat_row_is_kept_unless_disabled(django_broker):
    from django_tasks_q.models import WorkerHeartbeat

    queue = django_broker.queue()
    with WorkerProcess(django_broker.url, "-Q", queue, "-c", "2", "-n", "beating@x", env=django_broker.env) as worker:
        worker.wait_ready()
        row = wait_until(lambda: WorkerHeartbeat.objects.filter(owner="worker:beating@x").first(), 10, "the row")
        assert row.concurrency == 2 and row.queues == [queue] and row.hostname == "beating@x"
    assert not WorkerHeartbeat.objects.filter(owner="worker:beating@x").exists()  # removed on exit
    with WorkerProcess(django_broker.url, "-Q", queue, "-n", "silent@x", "--without-heartbeat", env=django_broker.env) as worker:
        worker.wait_ready()
        done = wt.pid.apply_async(queue=queue)
        wait_until(lambda: state(done.id) == states.SUCCESS, 30, "a task")
        assert not WorkerHeartbeat.objects.filter(owner="worker:silent@x").exists()


def test_log_level_and_logfile(django_broker, tmp_path):
    queue, logfile = django_broker.queue(), tmp_path / "worker.log"
    with WorkerProcess(django_broker.url, "-Q", queue, "-c", "1", "-l", "debug", "--logfile", str(logfile), env=django_broker.env) as worker:
        worker.wait_ready()
        result = wt.log_line.apply_async(("hello",), queue=queue)
        wait_until(lambda: state(result.id) == states.SUCCESS, 30, "the task")
        wait_until(lambda: logfile.exists() and f"wt.log_line[{result.id}] SUCCESS" in logfile.read_text(), 10, "the DEBUG line")
    text = logfile.read_text()
    assert f"[wt.log_line({result.id})] logged hello" in text
    with WorkerProcess(django_broker.url, "-Q", queue, "-c", "1", "-l", "info", env=django_broker.env) as worker:
        worker.wait_ready()
        quiet = wt.pid.apply_async(queue=queue)
        wait_until(lambda: state(quiet.id) == states.SUCCESS, 30, "the task")
        assert quiet.id not in worker.output()  # no per-task line above DEBUG


def test_banner_lists_the_setup_without_the_password(transactional_db):
    services.require("amqp")
    amqp = Broker("amqp", services.AMQP_URL)
    assert ":guest@" in amqp.url
    queue = amqp.queue()
    try:
        with WorkerProcess(amqp.url, "-Q", queue, "-c", "1", "-l", "info") as worker:
            worker.wait_ready()
            out = worker.output()
        assert "amqp://guest:**@" in out
        assert "guest:guest" not in out
        for expected in ("concurrency:  1 processes (prefork)", f"queues:       {queue}", "wt.pid"):
            assert expected in out
    finally:
        delete_amqp_queues(amqp, [queue])


def test_burst_purge_and_pidfile(django_broker, tmp_path):
    queue, path, pidfile = django_broker.queue(), str(tmp_path / "runs"), tmp_path / "worker.pid"
    for i in range(3):
        wt.record.apply_async((path, str(i)), queue=queue)
    with WorkerProcess(django_broker.url, "-Q", queue, "--purge", "--burst", env=django_broker.env) as purged:
        assert purged.wait(60) == 0
        assert "Purged 3 message(s)" in purged.output()
    assert wt.lines(path) == []
    with WorkerProcess(django_broker.url, "-Q", queue, "-c", "1", "--pidfile", str(pidfile), env=django_broker.env) as first:
        first.wait_ready()
        assert int(pidfile.read_text()) == first.proc.pid
        with WorkerProcess(django_broker.url, "-Q", queue, "--pidfile", str(pidfile), env=django_broker.env) as second:
            assert second.wait(30) == 1
            assert "is running" in second.output() and "Traceback" not in second.output()
    assert not pidfile.exists()


# -- far ETAs --------------------------------------------------------------------------------


def test_far_eta_waits_in_the_delayed_store_and_runs_once_on_time(broker, tmp_path):
    from django_tasks_q.models import DelayedMessage, QueueMessage

    queue, path = broker.queue(), str(tmp_path / "runs")
    env = {**broker.env, "TQ_ETA_HORIZON": "2"}
    try:
        # the publisher's horizon is long, so the message reaches the worker at once
        with override_settings(TASKS_Q=settings_for(broker, ETA_HORIZON=3600.0)):
            with WorkerProcess(broker.url, "-Q", queue, "-c", "1", env=env) as worker:
                worker.wait_ready()
                eta = time.time() + 8
                result = wt.on_time.apply_async((path, "k", eta), countdown=8, queue=queue)
                if broker.name == "amqp":  # the same message twice: stored once
                    wt.on_time.apply_async((path, "k", eta), countdown=8, queue=queue, task_id=result.id)
                    wait_until(lambda: DelayedMessage.objects.filter(task_id=result.id).exists(), 5, "a delayed row")
                    assert DelayedMessage.objects.filter(task_id=result.id).count() == 1
                elif broker.name == "django":
                    wait_until(
                        lambda: QueueMessage.objects.filter(task_id=result.id, owner=None).exclude(visible_at__lte=_now()).exists(),
                        5, "the message held back in its row",
                    )  # fmt: skip
                wait_until(lambda: state(result.id) == states.SUCCESS, 30, "the delayed task")
        ran = [row[1].split(":") for row in wt.lines(path, "ran")]
        assert len(ran) == 1
        assert float(ran[0][1]) >= -0.002
    finally:
        delete_amqp_queues(broker, [queue])


def _now():
    from django.utils import timezone

    return timezone.now()


# -- command-line errors (real processes: exit code and output) -------------------------------


@pytest.mark.parametrize(
    "args, expected",
    [
        (["-c", "0"], "argument -c/--concurrency: must be a whole number >= 1"),
        (["--autoscale", "2,5"], "argument --autoscale: must be MAX,MIN"),
        (["-P", "gevent"], "argument -P/--pool: invalid choice: 'gevent'"),
        (["-B"], "-B/--beat: the periodic task scheduler (beat) is not available yet"),
    ],
)
def test_bad_flags_exit_2_naming_the_flag(args, expected):
    done = subprocess.run(
        [sys.executable, "manage.py", "runworker", *args], cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "testproject.settings"},
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert expected in done.stderr
    assert "Traceback" not in done.stderr
