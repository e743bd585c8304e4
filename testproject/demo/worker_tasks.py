"""Tasks the worker tests run. Each execution can leave a line in a file (O_APPEND),
so a test counts executions without trusting the worker it tests.

A line is ``<event> <key> <pid> <redelivered> <time>``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time

from django_tasks_q import Ignore, Reject, SoftTimeLimitExceeded, get_task_logger, task

logger = get_task_logger(__name__)


def note(path: str, event: str, key: str, redelivered: bool = False) -> None:
    line = f"{event} {key} {os.getpid()} {int(bool(redelivered))} {time.time():.6f}\n".encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def lines(path: str, event: str | None = None) -> list[list[str]]:
    """The recorded lines, split (``event`` filters)."""
    try:
        with open(path) as f:
            rows = [line.split() for line in f if line.strip()]
    except FileNotFoundError:
        return []
    return [r for r in rows if event is None or r[0] == event]


@task(bind=True, name="wt.record")
def record(self, path, key, seconds=0.0):
    """Note a start, optionally sleep, note the end; return the key."""
    note(path, "start", key, self.request.redelivered)
    if seconds:
        time.sleep(seconds)
    note(path, "end", key, self.request.redelivered)
    return key


@task(bind=True, name="wt.on_time")
def on_time(self, path, key, eta_ts):
    """Note how late (seconds, negative: early) this run is against ``eta_ts``."""
    note(path, "ran", f"{key}:{time.time() - eta_ts:.6f}", self.request.redelivered)
    return key


@task(name="wt.die", acks_late=True)
def die(path, key):
    note(path, "start", key)
    os.kill(os.getpid(), signal.SIGKILL)


@task(name="wt.die_requeue", acks_late=True, reject_on_worker_lost=True)
def die_requeue(path, key):
    note(path, "start", key)
    os.kill(os.getpid(), signal.SIGKILL)


@task(name="wt.die_early_ack", acks_late=False)
def die_early_ack(path, key):
    note(path, "start", key)
    os.kill(os.getpid(), signal.SIGKILL)


@task(bind=True, name="wt.retrying", max_retries=5, track_started=True)
def retrying(self, path, key, times):
    note(path, "start", key)
    if self.request.retries < times:
        raise self.retry(countdown=0.1)
    return self.request.retries


@task(bind=True, name="wt.reject_once")
def reject_once(self, path, key):
    note(path, "start", key, self.request.redelivered)
    if len([r for r in lines(path, "start") if r[1] == key]) == 1:
        raise Reject("first time", requeue=True)
    return "second time"


@task(name="wt.reject_drop")
def reject_drop():
    raise Reject("not for us")


@task(name="wt.ignored")
def ignored():
    raise Ignore()


@task(name="wt.soft_limited", soft_time_limit=0.5)
def soft_limited():
    try:
        time.sleep(5)
    except SoftTimeLimitExceeded:
        return "cleaned up"
    return "not interrupted"


@task(name="wt.hard_limited", time_limit=1)
def hard_limited():
    time.sleep(30)


@task(name="wt.rate_limited", rate_limit="4/s")
def rate_limited(path, key):
    note(path, "ran", key)


@task(name="wt.async_add")
async def async_add(x, y):
    await asyncio.sleep(0.01)
    return x + y


@task(name="wt.pid")
def pid():
    return os.getpid()


_hoard: list[bytes] = []


@task(name="wt.hoard")
def hoard(kib):
    """Keep ``kib`` KiB alive; return [pid, resident KiB after, objects the collector skips]."""
    import gc

    from django_tasks_q.worker.recycle import rss_kib

    _hoard.append(b"x" * (kib * 1024))
    return [os.getpid(), rss_kib(), gc.get_freeze_count()]


@task(name="wt.log_line")
def log_line(text):
    logger.warning("logged %s", text)
    return text


@task(name="wt.two_args")
def two_args(a, b):
    return a + b


@task(name="wt.spin", soft_time_limit=0.5)
def spin(seconds):
    """Busy in Python bytecode (so a pool thread can be interrupted), up to ``seconds``."""
    end = time.monotonic() + seconds
    try:
        while time.monotonic() < end:
            sum(range(100))
    except SoftTimeLimitExceeded:
        return "cleaned up"
    return "not interrupted"


@task(bind=True, name="wt.hold_gil")
def hold_gil(self, path, key, n):
    """Hold the GIL for a while: ``sum(range(n))`` runs in C and never lets another thread run."""
    note(path, "start", key, self.request.redelivered)
    total = sum(range(n))
    note(path, "end", key, self.request.redelivered)
    return total
