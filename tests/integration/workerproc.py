"""Start real ``manage.py runworker`` processes for tests, and always stop them.

    with WorkerProcess(broker.url, "-c", "2", env=broker.env) as worker:
        worker.wait_ready()
        ...

The worker shares the test database: its settings get the test database's name
(``SQLITE_PATH`` or ``POSTGRES_DB``). Its output goes to a log file the test can
read (``worker.output()``) and that failing assertions show.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[2]
READY_LINE = " ready."
#: logged by a Redis consumer that was taken for dead while alive (its messages may run twice)
EXPIRED_LINE = "had expired"
#: Redis database the worker tests use (flushed around each test)
REDIS_DB = int(os.environ.get("REDIS_WORKER_DB", "4"))
#: short liveness numbers, so a killed worker's messages come back within seconds
FAST_LIVENESS = {
    "TQ_HEARTBEAT_INTERVAL": "0.5",
    "TQ_HEARTBEAT_TIMEOUT": "2",
    "TQ_POLL_INTERVAL": "0.1",
}


def wait_until(
    condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.05
) -> Any:
    """Return ``condition()``'s first truthy value; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def database_env() -> dict[str, str]:
    """Point a subprocess's settings at the test database."""
    from django.db import connection

    name = str(connection.settings_dict["NAME"])
    if connection.vendor == "sqlite":
        return {"SQLITE_PATH": name}
    if connection.vendor == "postgresql":
        return {"TQ_DATABASE": "postgres", "POSTGRES_DB": name}
    return {"MYSQL_DB": name}


@dataclass
class Broker:
    """One broker the worker tests run against."""

    name: str
    url: str
    env: dict[str, str] = field(default_factory=dict)

    def queue(self) -> str:
        """A fresh queue name, so tests never see each other's messages."""
        return f"wt-{uuid.uuid4().hex[:10]}"


def redis_url(base: str) -> str:
    parts = urlsplit(base)
    return f"{parts.scheme}://{parts.netloc}/{REDIS_DB}"


def flush_redis(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    finally:
        client.close()


class WorkerProcess:
    """A ``runworker`` subprocess in its own process group."""

    def __init__(self, broker_url: str, *args: str, env: dict[str, str] | None = None) -> None:
        self.broker_url = broker_url
        self.args = list(args)
        self.extra_env = dict(env or {})
        self.proc: subprocess.Popen | None = None
        fd, path = tempfile.mkstemp(prefix="tq-worker-", suffix=".log")
        os.close(fd)
        self.log_path = Path(path)

    def env(self) -> dict[str, str]:
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "testproject.settings",
            "PYTHONUNBUFFERED": "1",
        }
        env.update(database_env())
        env["TQ_BROKER_URL"] = self.broker_url
        env.update(self.extra_env)
        return env

    def start(self) -> WorkerProcess:
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child keeps it
        self.proc = subprocess.Popen(
            [sys.executable, "manage.py", "runworker", *self.args],
            cwd=ROOT, env=self.env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        log.close()
        return self

    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_ready(self, timeout: float = 60.0) -> None:
        def ready() -> bool:
            if READY_LINE in self.output():
                return True
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(
                    f"worker exited with {self.proc.returncode} before it was ready:\n{self.output()}"
                )
            return False

        try:
            wait_until(ready, timeout, "the worker's ready line")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- worker output ---\n{self.output()[-5000:]}") from None

    def send(self, signum: int) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signum)

    def kill_group(self) -> None:
        """SIGKILL the worker and every process it started."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=30)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"worker still running after {timeout}s:\n{self.output()[-5000:]}"
            ) from None

    def stop(self, timeout: float = 30.0) -> None:
        """Warm stop; kill the group if it does not exit in ``timeout``."""
        if self.proc is None or self.proc.poll() is not None:
            self._reap_group()
            return
        self.send(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
        self._reap_group()

    def _reap_group(self) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # children left behind, if any
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass

    def __enter__(self) -> WorkerProcess:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop(timeout=10.0)
        if exc[0] is not None:
            sys.stderr.write(f"--- worker log {self.log_path} ---\n{self.output()[-8000:]}\n")
            return
        output = self.output()
        # A live worker taken for dead is a bug whatever the test checks (a late heartbeat).
        assert EXPIRED_LINE not in output, f"a live consumer's heartbeat expired:\n{output[-8000:]}"
        self.log_path.unlink(missing_ok=True)


# -- fixtures (import them into a test module) ---------------------------------------------
import pytest  # noqa: E402

from tests import services  # noqa: E402

BROKER_PARAMS = [
    pytest.param("django", id="django"),
    pytest.param("redis", id="redis", marks=pytest.mark.redis),
    pytest.param("amqp", id="amqp", marks=pytest.mark.amqp),
]


def make_broker(name: str) -> Broker:
    env = dict(FAST_LIVENESS)
    if name == "django":
        return Broker("django", "django://", env)
    if name == "redis":
        services.require("redis")
        return Broker("redis", redis_url(services.REDIS_URL), env)
    if name == "amqp":
        services.require("amqp")
        return Broker("amqp", services.AMQP_URL, env)
    raise ValueError(name)


def settings_for(broker: Broker, **extra: Any) -> dict[str, Any]:
    """TASKS_Q for the test process, publishing to ``broker``."""
    from django.conf import settings

    conf = dict(settings.TASKS_Q)
    conf.update(
        BROKER_URL=broker.url, HEARTBEAT_INTERVAL=0.5, HEARTBEAT_TIMEOUT=2.0, POLL_INTERVAL=0.1
    )
    conf.update(extra)
    return conf


@pytest.fixture(params=BROKER_PARAMS, name="broker")
def broker_fixture(request: Any, transactional_db: Any) -> Any:
    """Each broker in turn, with the test process publishing to it."""
    from django.test import override_settings

    chosen = make_broker(request.param)
    if chosen.name == "redis":
        flush_redis(chosen.url)
    with override_settings(TASKS_Q=settings_for(chosen)):
        yield chosen
    if chosen.name == "redis":
        flush_redis(chosen.url)


def delete_amqp_queues(broker: Broker, queues: list[str]) -> None:
    """RabbitMQ keeps queues: delete the test's own."""
    if broker.name != "amqp":
        return
    from kombu import Connection

    with Connection(broker.url) as conn:
        channel = conn.channel()
        for queue in queues:
            try:
                channel.queue_delete(queue)
            except Exception:
                channel = conn.channel()


@pytest.fixture(name="django_broker")
def django_broker_fixture(transactional_db: Any) -> Any:
    """The ``django://`` broker alone (supervisor behaviour that does not depend on it)."""
    from django.test import override_settings

    chosen = make_broker("django")
    with override_settings(TASKS_Q=settings_for(chosen)):
        yield chosen


def state(task_id: str) -> str:
    from django_tasks_q.results import get_store

    return get_store().get_task_meta(task_id)["status"]


def meta(task_id: str) -> dict:
    from django_tasks_q.results import get_store

    return get_store().get_task_meta(task_id)


def succeeded(ids: list[str]) -> bool:
    return all(state(i) == "SUCCESS" for i in ids)


def queued_rows(queue: str) -> int:
    """Messages of ``queue`` still in the ``django://`` table (ready or reserved)."""
    from django_tasks_q.models import QueueMessage

    return QueueMessage.objects.filter(queue=queue).count()
