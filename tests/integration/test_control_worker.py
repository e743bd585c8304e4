"""End to end with a real ``runworker`` process: control reaches it, and revokes persist.

The worker runs in a subprocess on the test database (``django://``) or Redis, with
a queue of its own and a unique name.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings

from django_tasks_q import states
from django_tasks_q.calling import send_task
from django_tasks_q.control import control
from django_tasks_q.results import get_store
from tests.control_fakes import broker_url, isolated_broker, subprocess_env, wait_for

ROOT = Path(__file__).resolve().parents[2]
ADD = "testproject.demo.tasks.add"


@pytest.fixture(params=["django", "redis"])
def env(request: pytest.FixtureRequest, transactional_db: None) -> Iterator[dict]:
    url = broker_url(request.param)
    with isolated_broker(url) as queues:
        yield {"url": url, "queue": queues[0]}


def start_worker(url: str, queue: str, hostname: str) -> subprocess.Popen:
    env = subprocess_env(TQ_BROKER_URL=url)
    return subprocess.Popen(
        [sys.executable, "manage.py", "runworker", "-P", "solo", "-Q", queue, "-n", hostname, "--without-heartbeat"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def stop(process: subprocess.Popen) -> str:
    if process.poll() is None:
        process.kill()
    _, err = process.communicate(timeout=30)
    return err


def test_a_worker_started_after_a_revoke_skips_the_task_and_obeys_control(env: dict) -> None:
    queue, hostname = env["queue"], f"w-{uuid.uuid4().hex[:8]}@test"
    # Given a task revoked before any worker runs, queued ahead of a normal one
    revoked_id = str(uuid.uuid4())
    control.revoke(revoked_id)
    send_task(ADD, [1, 1], task_id=revoked_id, queue=queue)
    marker = send_task(ADD, [2, 2], queue=queue)

    # When a worker starts
    process = start_worker(env["url"], queue, hostname)
    try:
        # Then it runs the normal task and skips the revoked one
        store = get_store()
        wait_for(lambda: store.get_task_meta(marker.id)["status"] == states.SUCCESS, timeout=60)
        assert store.get_task_meta(revoked_id)["status"] == states.REVOKED

        # And it answers control commands
        assert control.ping(destination=[hostname], timeout=5) == [{hostname: {"ok": "pong"}}]
        inspect = control.inspect(destination=[hostname], timeout=5)
        assert ADD in inspect.registered()[hostname]
        assert revoked_id in inspect.revoked()[hostname]
        assert control.rate_limit(ADD, "100/s", destination=[hostname], reply=True, timeout=5) == [
            {hostname: {"ok": "new rate limit set successfully"}}
        ]
        assert control.shutdown(destination=[hostname], reply=True, timeout=5) == [
            {hostname: {"ok": "shutting down"}}
        ]
        wait_for(lambda: process.poll() is not None, timeout=30)
    finally:
        errors = stop(process)
    assert process.returncode == 0, errors
    assert settings.TASKS_Q["DEFAULT_QUEUE"] == queue
