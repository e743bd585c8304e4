"""Start a real worker for the canvas tests, on ``django://`` or Redis."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.test import override_settings

from tests import services
from tests.integration.workerproc import FAST_LIVENESS, WorkerProcess

#: Redis database of the canvas worker tests (flushed before each test)
REDIS_URL = os.environ.get("TQ_CANVAS_REDIS_URL", "redis://127.0.0.1:6379/7")
APP = "tests.integration.canvas_app"


def broker_url(name: str) -> str:
    if name == "redis":
        services.require("redis")
        return REDIS_URL
    return "django://"


@contextmanager
def running_worker(
    url: str,
    concurrency: int = 4,
    pool: str = "threads",
    queue: str | None = None,
    **env: str,
) -> Iterator[WorkerProcess]:
    """A ``runworker`` on ``url``; this process publishes to the same broker meanwhile.

    Both use a queue of their own as the default queue (the worker sends follow-ups,
    chain links and chord bodies, there too), so concurrent runs of these tests on
    one Redis never take each other's messages.
    """
    queue = queue or new_queue()
    worker_env = {"TQ_EXTRA_APPS": APP, "TQ_DEFAULT_QUEUE": queue, **FAST_LIVENESS, **env}
    overrides = {"BROKER_URL": url, "DEFAULT_QUEUE": queue}
    args = ["--pool", pool, "-c", str(concurrency), "-Q", queue]
    with override_settings(TASKS_Q={**django_settings.TASKS_Q, **overrides}):
        with WorkerProcess(url, *args, env=worker_env) as worker:
            worker.wait_ready()
            yield worker


@contextmanager
def publishing_to(url: str, queue: str) -> Iterator[None]:
    """Publish to ``queue`` on ``url`` (no worker yet)."""
    overrides = {"BROKER_URL": url, "DEFAULT_QUEUE": queue}
    with override_settings(TASKS_Q={**django_settings.TASKS_Q, **overrides}):
        yield


def new_queue() -> str:
    return f"canvas-{uuid.uuid4().hex[:10]}"


def read_lines(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(params=["django", "redis"])
def broker(request) -> str:
    return broker_url(request.param)
