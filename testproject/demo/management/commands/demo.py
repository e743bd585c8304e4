"""``manage.py demo``: start a worker, enqueue the demo tasks, print what comes back.

Used by ``make demo``. The worker is ``manage.py runworker`` in a subprocess,
stopped with SIGTERM at the end. Without our ``runworker`` command the demo says
so and runs the same calls in eager mode instead.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Any

from django.conf import settings as django_settings
from django.core.management import get_commands
from django.core.management.base import BaseCommand
from django.test.utils import override_settings


class Command(BaseCommand):
    help = "Run the demo tasks through a real worker and print their results."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait per result")
        parser.add_argument(
            "--eager", action="store_true", help="run the tasks in this process (no worker)"
        )

    def handle(self, *args: Any, timeout: float, eager: bool, **options: Any) -> None:
        self.timeout = timeout
        if not eager and get_commands().get("runworker") != "django_tasks_q":
            self.stdout.write(
                "Our `runworker` command is not available yet: running the demo eagerly "
                "(in this process) instead of through a worker."
            )
            eager = True
        if eager:
            tq = dict(getattr(django_settings, "TASKS_Q", {}), ALWAYS_EAGER=True)
            with override_settings(TASKS_Q=tq):
                self.run_all()
            return
        worker = self.start_worker()
        try:
            self.run_all()
        finally:
            self.stop_worker(worker)

    # -- the worker subprocess -------------------------------------------------
    def start_worker(self) -> subprocess.Popen:
        cmd = [sys.executable, "manage.py", "runworker", "-Q", "default", "-c", "2"]
        self.stdout.write(f"Starting a worker: {' '.join(cmd[1:])}")
        return subprocess.Popen(cmd, env=dict(os.environ), start_new_session=True)

    def stop_worker(self, worker: subprocess.Popen) -> None:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
        self.stdout.write(f"Worker stopped (exit code {worker.returncode}).")

    # -- the calls ----------------------------------------------------------------
    def run_all(self) -> None:
        from testproject.demo.tasks import add, fail, flaky, long_progress, mul, noop, xsum

        # The first call waits for the worker to be up; the others show task latency.
        self.show("noop.delay()  (waits for the worker to start)", lambda: noop.delay().get(timeout=60))
        self.show("add.delay(4, 4)", lambda: add.delay(4, 4).get(timeout=self.timeout))
        self.show("mul.delay(8, 8)", lambda: mul.delay(8, 8).get(timeout=self.timeout))
        self.show(
            "add.apply_async((2, 2), countdown=1)",
            lambda: add.apply_async((2, 2), countdown=1).get(timeout=self.timeout),
        )
        try:
            from django_tasks_q import chain, chord, group
        except (ImportError, AttributeError):
            self.stdout.write("(canvas: chain/group/chord are not built yet)")
        else:
            self.show(
                "(add.s(4, 4) | mul.s(8))()",
                lambda: (add.s(4, 4) | mul.s(8))().get(timeout=self.timeout),
            )
            self.show(
                "chain(add.s(4, 4), mul.s(8))()",
                lambda: chain(add.s(4, 4), mul.s(8))().get(timeout=self.timeout),
            )
            self.show(
                "group(add.s(i, i) for i in range(10))()",
                lambda: group(add.s(i, i) for i in range(10))().get(timeout=self.timeout),
            )
            self.show(
                "chord((add.s(i, i) for i in range(10)), xsum.s())()",
                lambda: chord((add.s(i, i) for i in range(10)), xsum.s())().get(timeout=self.timeout),
            )
        self.show("fail.delay('boom') -> get(propagate=False)", lambda: self.failing(fail))
        self.show(
            "flaky.delay(succeed_on=2)  (retries twice, then returns its retry count)",
            lambda: flaky.delay(succeed_on=2).get(timeout=self.timeout),
        )
        self.show("long_progress.delay(steps=5)", lambda: self.progress(long_progress))

    def failing(self, fail: Any) -> str:
        result = fail.delay("boom")
        exc = result.get(timeout=self.timeout, propagate=False)
        return f"state={result.state} result={exc!r}"

    def progress(self, long_progress: Any) -> Any:
        result = long_progress.delay(steps=5, delay=0.2)
        seen: list[Any] = []
        deadline = time.monotonic() + self.timeout
        while not result.ready() and time.monotonic() < deadline:
            if result.state == "PROGRESS" and result.info not in seen:
                seen.append(result.info)
                self.stdout.write(f"    progress: {result.info}")
            time.sleep(0.05)
        return result.get(timeout=max(0.1, deadline - time.monotonic()))

    def show(self, label: str, call: Any) -> None:
        started = time.monotonic()
        try:
            value = call()
        except Exception as exc:  # a demo shows every outcome and carries on
            value = f"ERROR {type(exc).__name__}: {exc}"
        elapsed = (time.monotonic() - started) * 1000
        self.stdout.write(f"{label:<62} -> {value}   ({elapsed:.0f} ms)")
