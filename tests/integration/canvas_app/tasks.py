"""Tasks the canvas integration tests run on real workers.

Side effects go to files named by the test (one JSON line per call, appended
atomically), so a test counts executions across worker processes and restarts.
"""

from __future__ import annotations

import json
import os
import time

from django_tasks_q import task
from django_tasks_q.exceptions import RuntimeWarningError
from testproject.demo.tasks import add


def _append(path: str, record: object) -> None:
    line = (json.dumps(record) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


@task(name="canvas_app.record_body")
def record_body(values, path):
    """A chord body that logs each execution; returns the sum."""
    _append(path, {"pid": os.getpid(), "n": len(values)})
    return sum(values)


@task(name="canvas_app.slow_add", acks_late=True)
def slow_add(x, y, delay=0.0, path=None):
    time.sleep(delay)
    if path:
        _append(path, {"member": x})
    return x + y


@task(name="canvas_app.boom")
def boom(message="boom"):
    raise KeyError(message)


@task(name="canvas_app.errback")
def errback(request, exc, traceback, path):
    _append(path, {"errback": request.id, "exc": type(exc).__name__, "msg": str(exc)})


@task(name="canvas_app.wait_inside")
def wait_inside(allow=False):
    """Calls get() on another task from inside a task."""
    result = add.delay(1, 1)
    try:
        return result.get(timeout=20, disable_sync_subtasks=not allow)
    except RuntimeWarningError as exc:
        return f"refused: {exc}"[:60]
