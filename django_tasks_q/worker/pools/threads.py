"""The threads pool: one consumer thread, tasks on N pool threads of the same process.

Good for I/O-bound tasks. The consuming thread receives, acks and keeps the
broker connection; pool threads run the tracer and write results straight to
the store (so a waiting client sees them at once), then hand the outcome back
for the ack. Time limits are best effort here (see ``timelimits.py``): a thread
cannot be killed.
"""

from __future__ import annotations

import logging
import threading
import time
from queue import Empty, SimpleQueue
from typing import TYPE_CHECKING, Any

from ... import states
from ...execution import Outcome
from .. import handback, outcomes
from ..engine import TaskTerminated
from ..timelimits import ThreadWatchdog, raise_in_thread

if TYPE_CHECKING:
    from ..engine import Engine

logger = logging.getLogger("django_tasks_q.worker")

#: while tasks run, the consuming thread looks for finished ones this often
BUSY_WAIT = 0.05
#: autoscale: seconds without work before shrinking back to the minimum
SHRINK_AFTER = 10.0


class ThreadExecutor:
    def __init__(self, size: int, autoscale: tuple[int, int] | None = None) -> None:
        self.size = 0
        self.autoscale = autoscale
        self.work: SimpleQueue = SimpleQueue()
        self.done: SimpleQueue = SimpleQueue()
        self.running: dict[str, int] = {}  # task id -> thread id
        self.watchdog = ThreadWatchdog()
        self._full_since: float | None = None
        self._idle_since = time.monotonic()
        self._grown_at = 0.0
        self.resize(size)

    # -- pool threads ------------------------------------------------------------------
    def resize(self, size: int) -> None:
        size = max(1, size)
        while self.size < size:
            threading.Thread(
                target=self._work, name=f"tasks_q-thread-{self.size}", daemon=True
            ).start()
            self.size += 1
        while self.size > size:
            self.work.put(None)
            self.size -= 1

    def _work(self) -> None:
        from django.db import connections

        while True:
            item = self.work.get()
            if item is None:
                connections.close_all()
                return
            engine, job, soft, hard = item
            try:
                outcome = self._execute(engine, job, soft, hard)
            except BaseException as exc:  # the hard limit landed while the soft one was handled
                outcome = Outcome(states.FAILURE, exc=exc)
            self.done.put((job, outcome))  # after _execute's _leave: nothing can interrupt it now

    def _execute(self, engine: Engine, job: Any, soft: float | None, hard: float | None) -> Outcome:
        """Run one job; always return its outcome, so the engine never waits on it forever.

        A limit is raised in this thread asynchronously: one on its way when the
        task ends can land anywhere here, even in ``finally`` (see ``_leave``).
        """
        self.running[job.id] = threading.get_ident()
        self.watchdog.arm(job.id, soft, hard)
        try:
            return engine.run_task(job, store=engine.store)
        except TaskTerminated:
            return Outcome(states.REVOKED)
        except BaseException as exc:  # a limit that landed after the tracer's own handlers
            return outcomes.escaped(job, exc, engine.store)
        finally:
            self._leave(job.id)

    def _leave(self, task_id: str) -> None:
        """The task is over: take it off the watchdog, even if a late limit interrupts us."""
        while True:
            try:
                self.watchdog.disarm()
                self.running.pop(task_id, None)
                return
            except BaseException:  # a limit already on its way (soft, then hard, at most)
                continue

    def terminate(self, task_id: str) -> bool:
        thread_id = self.running.get(task_id)
        return thread_id is not None and raise_in_thread(thread_id, TaskTerminated)

    # -- called by the engine on the consuming thread (lock held) -----------------------
    def collect(self, engine: Engine, block: bool = False, timeout: float = 1.0) -> int:
        count = 0
        while True:
            try:
                job, outcome = (
                    self.done.get(timeout=timeout)
                    if block and not count
                    else self.done.get_nowait()
                )
            except Empty:
                return count
            engine.finish(job, outcome)
            count += 1

    def step(self, engine: Engine) -> bool:
        """One pass of the consuming thread; True when the engine should exit."""
        self.collect(engine)
        while len(engine.active) < self.size:
            job = engine.next_job()
            if job is None:
                break
            soft, hard = engine.begin(job)
            self.work.put((engine, job, soft, hard))
        engine.flush()
        full = len(engine.active) >= self.size
        self._guard(engine, full)
        self._autoscale(engine, full)
        due = engine.holding.next_due()
        if full:
            self.collect(
                engine,
                block=True,
                timeout=engine.idle_wait if due is None else min(due, engine.idle_wait),
            )
            return False
        wait = (
            BUSY_WAIT
            if engine.active
            else (engine.idle_wait if due is None else min(due, engine.idle_wait))
        )
        got = engine.consumer.drain(wait)
        return not got and not engine.active and engine.burst_done()

    def _guard(self, engine: Engine, full: bool) -> None:
        """Every thread busy for ``release_after``: give waiting messages to other workers."""
        now = time.monotonic()
        if not full:
            self._full_since = None
            if engine.consumer.paused and not engine.stopping:
                engine.consumer.resume()
            return
        if self._full_since is None:
            self._full_since = now
        elif now - self._full_since >= engine.config.release_after and (
            engine.ready or len(engine.holding)
        ):
            engine.consumer.pause()
            handback.give_back_waiting(engine)

    def _autoscale(self, engine: Engine, full: bool) -> None:
        if self.autoscale is None:
            return
        high, low = self.autoscale
        now = time.monotonic()
        if engine.active or engine.ready:
            self._idle_since = now
        if full and engine.ready and self.size < high and now - self._grown_at >= 1.0:
            self._grown_at = now
            self.resize(self.size + 1)
            logger.info("Autoscale: %d threads", self.size)
        elif (
            not engine.active and now - self._idle_since >= SHRINK_AFTER and self.size > max(1, low)
        ):
            self.resize(max(1, low))
            logger.info("Autoscale: %d threads", self.size)

    def stop(self) -> None:
        for _ in range(self.size):
            self.work.put(None)
        self.watchdog.stop()

    def describe(self) -> dict[str, Any]:
        return {"implementation": "threads", "max-concurrency": self.size}
