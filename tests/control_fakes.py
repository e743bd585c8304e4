"""A FakeWorker with the interface control handlers use, and a node running it in a thread."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from django_tasks_q.worker.control_handlers import ControlDispatcher, ControlThread


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.01) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


def task_info(task_id: str, name: str = "demo.add", args: Any = (2, 2)) -> dict[str, Any]:
    return {
        "id": task_id,
        "name": name,
        "args": list(args),
        "kwargs": {},
        "hostname": "fake",
        "worker_pid": 1,
    }


class FakeWorker:
    """Implements what ``ControlDispatcher`` calls, and records every call."""

    def __init__(
        self,
        hostname: str | None = None,
        active: list[dict] | None = None,
        reserved: list[dict] | None = None,
        scheduled: list[dict] | None = None,
        tasks: tuple[str, ...] = ("demo.add", "demo.mul"),
        concurrency: int = 2,
    ) -> None:
        self.hostname = hostname or f"fake-{uuid.uuid4().hex[:8]}@test"
        self.active = list(active or [])
        self.reserved = list(reserved or [])
        self.scheduled = list(scheduled or [])
        self.tasks = list(tasks)
        self.concurrency = concurrency
        self.queues = ["default"]
        self.rate_limits: dict[str, Any] = {}
        self.time_limits: dict[str, tuple[Any, Any]] = {}
        self.terminated: list[tuple[str, str]] = []
        self.calls: list[tuple[str, tuple]] = []
        self.stopped = threading.Event()

    def _record(self, name: str, *args: Any) -> None:
        self.calls.append((name, args))

    def active_requests(self) -> list[dict]:
        return list(self.active)

    def reserved_requests(self) -> list[dict]:
        return list(self.reserved)

    def scheduled_requests(self) -> list[dict]:
        return list(self.scheduled)

    def stats(self) -> dict[str, Any]:
        return {
            "pid": 4242,
            "pool": {"max-concurrency": self.concurrency},
            "total": {"demo.add": 3},
        }

    def registered_tasks(self) -> list[str]:
        return list(self.tasks)

    def terminate_task(self, task_id: str, signal: str) -> bool:
        self._record("terminate_task", task_id, signal)
        if any(r["id"] == task_id for r in self.active):
            self.terminated.append((task_id, signal))
            return True
        return False

    def set_rate_limit(self, task_name: str, rate: Any) -> None:
        self._record("set_rate_limit", task_name, rate)
        if task_name not in self.tasks:
            raise KeyError(task_name)
        self.rate_limits[task_name] = rate

    def set_time_limit(self, task_name: str, soft: Any, hard: Any) -> None:
        self._record("set_time_limit", task_name, soft, hard)
        if task_name not in self.tasks:
            raise KeyError(task_name)
        self.time_limits[task_name] = (soft, hard)

    def pool_grow(self, n: int) -> None:
        self._record("pool_grow", n)
        self.concurrency += n

    def pool_shrink(self, n: int) -> None:
        self._record("pool_shrink", n)
        if n >= self.concurrency:
            raise ValueError(f"cannot shrink a pool of {self.concurrency} by {n}")
        self.concurrency -= n

    def add_consumer(self, queue: str) -> None:
        self._record("add_consumer", queue)
        if queue not in self.queues:
            self.queues.append(queue)

    def cancel_consumer(self, queue: str) -> None:
        self._record("cancel_consumer", queue)
        if queue in self.queues:
            self.queues.remove(queue)

    def shutdown(self) -> None:
        self._record("shutdown")
        self.stopped.set()


@contextmanager
def running_node(worker: FakeWorker, url: str | None = None) -> Iterator[ControlThread]:
    """The worker's pidbox node consuming in a thread, ready before the block starts."""
    thread = ControlThread(ControlDispatcher(worker), url=url, poll=0.05)
    thread.start()
    try:
        if not thread.ready.wait(10):
            raise AssertionError(f"control node of {worker.hostname} did not start")
        # Ready means answering: some brokers subscribe a moment after consume().
        from django_tasks_q.control import control

        wait_for(lambda: control.ping(destination=[worker.hostname], timeout=0.3), timeout=10)
        yield thread
    finally:
        thread.stop(timeout=10)
        assert not thread.is_alive(), "control thread did not stop"


#: the brokers the control suites run on
BROKERS = ("memory", "django", "redis", "amqp")


def broker_url(kind: str) -> str:
    """The URL of broker ``kind`` (skips locally, fails in CI, when its service is down)."""
    from tests import services

    if kind == "memory":
        return "memory://"
    if kind == "django":
        return "django://"
    if kind == "redis":
        services.require("redis")
        base = services.REDIS_URL.rsplit("/", 1)[0]
        return f"{base}/7"
    if kind == "amqp":
        services.require("amqp")
        return services.AMQP_URL
    raise ValueError(kind)


def drop_queues(url: str, names: list[str]) -> None:
    """Delete test queues (and their exchanges) from a shared broker; ignore what is gone."""
    if url.startswith(("memory://", "django://")):
        return  # in this process / rolled back with the test database
    if url.startswith("redis"):
        import redis

        client = redis.Redis.from_url(url)
        try:
            for name in names:  # the list, its bindings, the transport's keys
                keys = list(client.scan_iter(match=f"*{name}*", count=1000))
                if keys:
                    client.delete(*keys)
        finally:
            client.close()
        return
    from django_tasks_q.messaging.connection import broker_connection

    conn = broker_connection(url)
    try:
        for name in names:
            for delete in ("queue_delete", "exchange_delete"):
                channel = conn.channel()
                try:
                    getattr(channel, delete)(name)
                except Exception:
                    pass
                finally:
                    try:
                        channel.close()
                    except Exception:
                        pass
    finally:
        conn.release()


@contextmanager
def isolated_broker(url: str, **extra: Any) -> Iterator[list[str]]:
    """``override_settings`` with :func:`tasks_q_settings`; the test queues are deleted after."""
    from django.test import override_settings

    config = tasks_q_settings(url, **extra)
    try:
        with override_settings(TASKS_Q=config):
            yield list(config["QUEUES"])
    finally:
        drop_queues(url, list(config["QUEUES"]))


def tasks_q_settings(url: str, **extra: Any) -> dict[str, Any]:
    """``TASKS_Q`` for a test: this broker, fast polling, queues no other test uses."""
    from django.conf import settings

    suffix = uuid.uuid4().hex[:8]
    config = dict(settings.TASKS_Q)
    config.update(
        BROKER_URL=url,
        BROKER_TRANSPORT_OPTIONS={"polling_interval": 0.02},
        POLL_INTERVAL=0.05,
        DEFAULT_QUEUE=f"ctl-default-{suffix}",
        QUEUES=[f"ctl-default-{suffix}", f"ctl-images-{suffix}"],
    )
    config.update(extra)
    return config


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment for a ``manage.py``/``python -c`` child that uses this test database."""
    import os
    from pathlib import Path

    from django.db import connection

    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="testproject.settings", PYTHONPATH=str(root))
    name = str(connection.settings_dict["NAME"])
    variable = {"sqlite": "SQLITE_PATH", "postgresql": "POSTGRES_DB", "mysql": "MYSQL_DB"}[
        connection.vendor
    ]
    env[variable] = name
    env.update(extra)
    return env
