"""What ``runworker`` writes and how it refuses, against real processes: the heartbeat
row, log lines, the banner, ``--burst``/``--purge``/``--pidfile``, far ETAs, bad flags.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from django.test import override_settings

from django_tasks_q import states
from testproject.demo import worker_tasks as wt
from tests import services
from tests.integration.workerproc import (  # noqa: F401  (fixtures)
    ROOT,
    Broker,
    WorkerProcess,
    broker_fixture,
    delete_amqp_queues,
    django_broker_fixture,
    settings_for,
    state,
    wait_until,
)

pytestmark = pytest.mark.timeout(300)


# -- what the command writes ---------------------------------------------------------------


def test_heartbeat_row_is_kept_unless_disabled(django_broker):
    from django_tasks_q.models import WorkerHeartbeat

    queue = django_broker.queue()
    with WorkerProcess(
        django_broker.url, "-Q", queue, "-c", "2", "-n", "beating@x", env=django_broker.env
    ) as worker:
        worker.wait_ready()
        row = wait_until(
            lambda: WorkerHeartbeat.objects.filter(owner="worker:beating@x").first(), 10, "the row"
        )
        assert row.concurrency == 2 and row.queues == [queue] and row.hostname == "beating@x"
    assert not WorkerHeartbeat.objects.filter(owner="worker:beating@x").exists()  # removed on exit
    with WorkerProcess(
        django_broker.url,
        "-Q",
        queue,
        "-n",
        "silent@x",
        "--without-heartbeat",
        env=django_broker.env,
    ) as worker:
        worker.wait_ready()
        done = wt.pid.apply_async(queue=queue)
        wait_until(lambda: state(done.id) == states.SUCCESS, 30, "a task")
        assert not WorkerHeartbeat.objects.filter(owner="worker:silent@x").exists()


def test_log_level_and_logfile(django_broker, tmp_path):
    queue, logfile = django_broker.queue(), tmp_path / "worker.log"
    with WorkerProcess(
        django_broker.url,
        "-Q",
        queue,
        "-c",
        "1",
        "-l",
        "debug",
        "--logfile",
        str(logfile),
        env=django_broker.env,
    ) as worker:
        worker.wait_ready()
        result = wt.log_line.apply_async(("hello",), queue=queue)
        wait_until(lambda: state(result.id) == states.SUCCESS, 30, "the task")
        wait_until(
            lambda: logfile.exists() and f"wt.log_line[{result.id}] SUCCESS" in logfile.read_text(),
            10,
            "the DEBUG line",
        )
    text = logfile.read_text()
    assert f"[wt.log_line({result.id})] logged hello" in text
    with WorkerProcess(
        django_broker.url, "-Q", queue, "-c", "1", "-l", "info", env=django_broker.env
    ) as worker:
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
    with WorkerProcess(
        django_broker.url, "-Q", queue, "--purge", "--burst", env=django_broker.env
    ) as purged:
        assert purged.wait(60) == 0
        assert "Purged 3 message(s)" in purged.output()
    assert wt.lines(path) == []
    with WorkerProcess(
        django_broker.url, "-Q", queue, "-c", "1", "--pidfile", str(pidfile), env=django_broker.env
    ) as first:
        first.wait_ready()
        assert int(pidfile.read_text()) == first.proc.pid
        with WorkerProcess(
            django_broker.url, "-Q", queue, "--pidfile", str(pidfile), env=django_broker.env
        ) as second:
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
                    wt.on_time.apply_async(
                        (path, "k", eta), countdown=8, queue=queue, task_id=result.id
                    )
                    wait_until(
                        lambda: DelayedMessage.objects.filter(task_id=result.id).exists(),
                        5,
                        "a delayed row",
                    )
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
