"""The tasks the seeds use, plus a few that show failures, retries and progress."""

from __future__ import annotations

import time

from django_tasks_q import task


@task
def add(x, y):
    return x + y


@task
def mul(x, y):
    return x * y


@task
def xsum(numbers):
    return sum(numbers)


@task
def fail(message="boom"):
    raise ValueError(message)


@task(bind=True, max_retries=3, default_retry_delay=0)
def flaky(self, succeed_on=2):
    """Fails until its ``succeed_on``-th retry, then returns the number of retries."""
    if self.request.retries < succeed_on:
        raise self.retry(exc=ConnectionError("not yet"), countdown=0)
    return self.request.retries


@task(bind=True, track_started=True)
def long_progress(self, steps=5, delay=0.2):
    for i in range(steps):
        self.update_state(state="PROGRESS", meta={"current": i, "total": steps})
        time.sleep(delay)
    return {"current": steps, "total": steps}


@task
def sleep(seconds):
    time.sleep(seconds)
    return seconds


@task
def noop():
    return None


from . import worker_tasks  # noqa: E402,F401  (test-only tasks of the worker tests)
