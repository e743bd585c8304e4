"""Remote control interoperates with Celery, both ways, on Redis and RabbitMQ.

* the real ``celery inspect`` / ``celery control`` CLI talks to our worker node;
* our ``control`` client talks to a real Celery worker (tests/integration/celery_peer.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.test import override_settings

from django_tasks_q.control import control
from tests.control_fakes import (
    FakeWorker,
    broker_url,
    drop_queues,
    running_node,
    tasks_q_settings,
    wait_for,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["redis", "amqp"])
def url(request: pytest.FixtureRequest, transactional_db: None) -> Iterator[str]:
    url = broker_url(request.param)
    with override_settings(TASKS_Q=tasks_q_settings(url)):
        yield url


def celery_cli(url: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "celery", "-b", url, *args],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_celery_cli_inspects_and_controls_our_worker(url: str) -> None:
    worker = FakeWorker(active=[{"id": "c-1", "name": "demo.add", "args": [1], "kwargs": {}}])
    with running_node(worker):
        ping = celery_cli(url, "inspect", "ping", "-d", worker.hostname, "--timeout", "5")
        active = celery_cli(url, "inspect", "active", "-d", worker.hostname, "--timeout", "5")
        limit = celery_cli(
            url, "control", "rate_limit", "demo.add", "7/m", "-d", worker.hostname, "--timeout", "5"
        )

    assert ping.returncode == 0, ping.stderr
    assert f"{worker.hostname}: OK" in ping.stdout and "pong" in ping.stdout
    assert active.returncode == 0, active.stderr
    assert "c-1" in active.stdout
    assert limit.returncode == 0, limit.stderr
    assert "new rate limit set successfully" in limit.stdout
    assert worker.rate_limits == {"demo.add": "7/m"}


@pytest.fixture
def celery_worker(url: str) -> Iterator[tuple[str, subprocess.Popen]]:
    name = f"peer-{uuid.uuid4().hex[:8]}@test"
    queue = f"peer-{uuid.uuid4().hex[:8]}"
    env = dict(
        os.environ, PEER_BROKER_URL=url, PEER_RESULT_BACKEND="cache+memory://", PYTHONPATH=str(ROOT)
    )
    process = subprocess.Popen(
        [
            sys.executable, "-m", "celery", "-A", "tests.integration.celery_peer", "worker",
            "--pool", "solo", "-n", name, "-Q", queue,
            "--without-mingle", "--without-gossip", "--without-heartbeat", "--loglevel", "WARNING",
        ],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        yield name, process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(30)
        process.stderr.close()
        drop_queues(url, [queue])


def test_our_client_inspects_and_controls_a_celery_worker(
    celery_worker: tuple[str, subprocess.Popen],
) -> None:
    name, process = celery_worker
    # Given a real Celery worker that answers our ping
    assert wait_for(
        lambda: control.ping(destination=[name], timeout=1) or process.poll() is not None,
        timeout=60,
    )
    assert process.poll() is None, "the Celery worker exited"
    assert control.ping(destination=[name], timeout=5) == [{name: {"ok": "pong"}}]

    inspect = control.inspect(destination=[name], timeout=5)
    assert "interop.add" in inspect.registered()[name]
    assert inspect.active() == {name: []}
    assert inspect.stats()[name]["pid"] == process.pid

    # When we change it and then shut it down
    assert control.rate_limit("interop.add", "5/s", destination=[name], reply=True, timeout=5) == [
        {name: {"ok": "new rate limit set successfully"}}
    ]
    control.shutdown(destination=[name])

    # Then it stops
    assert wait_for(lambda: process.poll() is not None, timeout=30)
