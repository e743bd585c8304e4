"""The prefork pool: a supervisor process and N children that each consume and execute.

Why this shape (measured, see docs/worker.md "Process model"): a task runs in
the process that dequeued it, so there is no parent-to-child pipe per task; each
child claims batches over its own connection. The supervisor never touches a
task message. It:

* starts children and replaces any that die, with a back-off if they die young;
* recycles children that hit ``max_tasks_per_child``/``max_memory_per_child``
  (the child exits between tasks; a new one takes its slot);
* enforces hard time limits: each child writes "task X started at T, hard
  deadline D" in its shared-memory slot; past D the supervisor stores FAILURE
  (``TimeLimitExceeded``), runs the task's errbacks/chord failure, and SIGKILLs it;
* records what a dead child was running: ``WorkerLostError`` FAILURE (acks
  late), LOST (acked early), or lets the broker redeliver it
  (``reject_on_worker_lost``), counting deaths so a task that keeps killing
  processes is dead-lettered after ``MAX_DELIVERIES`` (``settle.py``);
* keeps its children's broker heartbeats alive, whatever their tasks do to
  their own threads (``leases.py``);
* grows and shrinks the pool (``--autoscale``, ``pool_grow``/``pool_shrink``),
  terminates a task on request, and asks children for what they hold.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ...exceptions import TimeLimitExceeded
from .. import leases, slots
from . import settle
from .child import child_main

if TYPE_CHECKING:
    from ..worker import Worker

logger = logging.getLogger("django_tasks_q.worker")

#: extra slots beyond the configured maximum, for pool_grow
SPARE_SLOTS = 16
#: a child idle this long may be stopped by autoscale
SHRINK_AFTER = 10.0
#: a child that dies younger than this is restarted after a growing delay
YOUNG = 2.0
#: seconds the supervisor waits for children asked to stop cold before killing them
COLD_GRACE = 2.0


@dataclass
class Child:
    pid: int
    index: int
    started: float
    stopping: bool = False


class PreforkPool:
    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        config = worker.config
        self.shared = slots.SharedState(config.max_processes + SPARE_SLOTS)
        self.shared.set_queues(config.queues)
        self.target = config.concurrency
        self.children: dict[int, Child] = {}
        self.stopping = False
        self.cold = False
        self._deadline: float | None = None
        self._cold_at: float | None = None
        self._purposes: dict[int, str] = {}  # pid -> why the supervisor ended it
        self._settled: set[int] = set()  # pids whose running task the supervisor already settled
        self._respawn_at = 0.0
        self._respawn_delay = 0.5
        self._burst_done: set[int] = set()
        self._scaled_at = 0.0
        self.ready_announced = False
        self.keeper: leases.LeaseKeeper | None = None

    # -- children ----------------------------------------------------------------------
    def start(self) -> None:
        if leases.applies_to(self.worker.config.broker_url):
            self.keeper = leases.LeaseKeeper(self.worker.config.broker_url)
            self.keeper.start()
        for _ in range(self.target):
            self._spawn()

    def close(self) -> None:
        """After the last child: stop vouching for children."""
        if self.keeper is not None:
            self.keeper.stop()

    def _free_index(self) -> int | None:
        for index in range(self.shared.capacity):
            if index not in self.children and index not in self._burst_done:
                return index
        return None

    def _spawn(self) -> None:
        index = self._free_index()
        if index is None:
            logger.error("No free process slot (capacity %d)", self.shared.capacity)
            return
        self.shared.slots[index].reset()
        from django.db import connections

        connections.close_all()  # a child must not inherit a database socket
        with self._fork_guard():
            # The child's collector never walks what it inherits (Django, the app's
            # modules): shorter pauses in tasks, and pages stay shared with the parent.
            gc.freeze()
            pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            child_main(self.worker, index)
        gc.unfreeze()  # the supervisor's own objects stay collectable
        self.children[index] = Child(pid, index, time.monotonic())
        if self.keeper is not None:
            self.keeper.watch(self.shared.slots[index])
        logger.debug("Started worker process %d in slot %d", pid, index)

    @contextmanager
    def _fork_guard(self) -> Iterator[None]:
        """Fork while the lease keeper, our only other thread, is parked between beats."""
        if self.keeper is None:
            yield
            return
        with self.keeper.paused(), warnings.catch_warnings():
            warnings.simplefilter(
                "ignore", DeprecationWarning
            )  # Python 3.12: "multi-threaded fork"
            yield

    def _maintain(self) -> None:
        if self.stopping:
            return
        if self.worker.config.burst and self._burst_done:
            return  # a burst run does not replace children that found the queues empty
        now = time.monotonic()
        while len([c for c in self.children.values() if not c.stopping]) < self.target:
            if now < self._respawn_at:
                return
            self._spawn()

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            child = next((c for c in self.children.values() if c.pid == pid), None)
            if child is not None:
                self._on_exit(child, status)

    def _on_exit(self, child: Child, status: int) -> None:
        del self.children[child.index]
        if self.keeper is not None:
            self.keeper.forget(child.index)
        state = self.shared.slots[child.index].read()
        purpose = self._purposes.pop(child.pid, None)
        settled = child.pid in self._settled
        self._settled.discard(child.pid)
        how = _describe(status)
        reason = state.exit_reason if state.state == slots.EXITING else slots.EXIT_NONE
        if state.task_id and not settled:
            settle.task_lost(self, child, state, how)
        if reason == slots.EXIT_BURST:
            self._burst_done.add(child.index)
        age = time.monotonic() - child.started
        if purpose or reason in (
            slots.EXIT_STOP,
            slots.EXIT_MAX_TASKS,
            slots.EXIT_MAX_MEMORY,
            slots.EXIT_BURST,
        ):
            logger.info(
                "Worker process %d %s (%s)", child.pid, how, purpose or slots.EXIT_REASONS[reason]
            )
            self._respawn_delay = 0.5
            return
        logger.error("Worker process %d %s (%s)", child.pid, how, slots.EXIT_REASONS[reason])
        if age < YOUNG:
            self._respawn_at = time.monotonic() + self._respawn_delay
            self._respawn_delay = min(self._respawn_delay * 2, 10.0)
        else:
            self._respawn_delay = 0.5

    # -- hard time limits --------------------------------------------------------------
    def enforce_time_limits(self) -> None:
        now = time.monotonic()
        for child in list(self.children.values()):
            state = self.shared.slots[child.index].read()
            if child.pid in self._settled:
                continue
            if state.busy and state.hard_deadline and now >= state.hard_deadline:
                limit = state.hard_deadline - state.started
                exc = TimeLimitExceeded(
                    f"Task {state.task_name}[{state.task_id}] ran past its hard time limit of "
                    f"{limit:g}s; its process {child.pid} was killed and replaced"
                )
                # Store first: on RabbitMQ the message is redelivered the moment the child dies.
                self.worker.store.mark_as_failure(
                    state.task_id,
                    exc,
                    f"TimeLimitExceeded: {exc}",
                    request=settle.request_of(self.worker, state),
                )
                if not self._kill(child, signal.SIGKILL, "hard time limit", state.task_id):
                    continue
                logger.error("%s", exc)
                settle.fail_callbacks(self, child, state, exc)

    def _kill(self, child: Child, signum: int, purpose: str, task_id: str) -> bool:
        """Signal ``child`` if it still runs ``task_id``; its task is then ours to settle."""
        slot = self.shared.slots[child.index]
        slot.mark_kill(int(signum))
        if slot.read().task_id != task_id:  # it finished meanwhile: leave it alone
            slot.mark_kill(0)
            return False
        self._purposes[child.pid] = purpose
        self._settled.add(child.pid)
        try:
            os.kill(child.pid, signum)
        except ProcessLookupError:
            pass
        return True

    def terminate(self, task_id: str, signum: int) -> bool:
        for child in list(self.children.values()):
            state = self.shared.slots[child.index].read()
            if state.busy and state.task_id == task_id:
                request = settle.request_of(self.worker, state)
                self.worker.store.mark_as_revoked(task_id, reason="terminated", request=request)
                if not self._kill(
                    child, signum, f"terminated with {signal.Signals(signum).name}", task_id
                ):
                    return False
                settle.revoked_callbacks(self.worker, state, signum)
                return True
        return False

    # -- size --------------------------------------------------------------------------
    def resize(self, target: int) -> int:
        self.target = max(1, min(target, self.shared.capacity))
        running = [c for c in self.children.values() if not c.stopping]
        extra = len(running) - self.target
        if extra > 0:
            states_ = {c.index: self.shared.slots[c.index].read() for c in running}
            running.sort(key=lambda c: (states_[c.index].busy, -states_[c.index].idle_since))
            for child in running[:extra]:
                child.stopping = True
                self._purposes[child.pid] = "pool shrank"
                self.shared.slots[child.index].request_stop()
        return self.target

    def autoscale(self) -> None:
        bounds = self.worker.config.autoscale
        if bounds is None or self.stopping:
            return
        high, low = bounds
        now = time.monotonic()
        if now - self._scaled_at < 1.0:
            return
        running = [c for c in self.children.values() if not c.stopping]
        states_ = [self.shared.slots[c.index].read() for c in running]
        busy = sum(1 for s in states_ if s.busy)
        if running and busy == len(running) and self.target < high:
            self._scaled_at = now
            self.resize(self.target + 1)
            logger.info("Autoscale: growing to %d processes", self.target)
        elif self.target > max(1, low) and all(
            not s.busy and now - s.idle_since >= SHRINK_AFTER for s in states_
        ):
            self._scaled_at = now
            self.resize(self.target - 1)
            logger.info("Autoscale: shrinking to %d processes", self.target)

    # -- shutdown ----------------------------------------------------------------------
    def warm_stop(self, timeout: float) -> None:
        if self.stopping:
            return
        self.stopping = True
        self._deadline = time.monotonic() + timeout
        for child in self.children.values():
            child.stopping = True
            self.shared.slots[child.index].request_stop()

    def cold_stop(self) -> None:
        if self.cold:
            return
        self.stopping = self.cold = True
        self._cold_at = time.monotonic() + COLD_GRACE
        for child in self.children.values():
            self._purposes.setdefault(child.pid, "cold shutdown")
            self.shared.slots[child.index].mark_kill(slots.COLD)

    def tick(self) -> bool:
        """Supervise once; True when the pool is done (stopped, or burst finished)."""
        self.reap()
        self.enforce_time_limits()
        self.autoscale()
        self._maintain()
        now = time.monotonic()
        if self._deadline is not None and now >= self._deadline and not self.cold:
            logger.warning("Shutdown timeout reached with tasks still running: cold shutdown")
            self.cold_stop()
        if self._cold_at is not None and now >= self._cold_at:
            for child in self.children.values():
                try:
                    os.kill(child.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if (
            not self.ready_announced
            and self.children
            and all(
                self.shared.slots[c.index].read().state in (slots.IDLE, slots.BUSY)
                for c in self.children.values()
            )
        ):
            self.ready_announced = True
            self.worker.on_pool_ready()
        if self.stopping or (self.worker.config.burst and self._burst_done):
            return not self.children
        return False

    # -- what children hold ------------------------------------------------------------
    def active(self) -> list[dict[str, Any]]:
        out = []
        for child in self.children.values():
            state = self.shared.slots[child.index].read()
            if state.busy:
                out.append(
                    {
                        "id": state.task_id, "name": state.task_name, "type": state.task_name,
                        "args": state.info.get("argsrepr"), "kwargs": state.info.get("kwargsrepr"),
                        "hostname": self.worker.hostname, "time_start": state.started_wall,
                        "acknowledged": not state.acks_late, "worker_pid": child.pid,
                        "delivery_info": {
                            "routing_key": state.info.get("routing_key"),
                            "redelivered": state.info.get("redelivered"),
                        },
                    }
                )  # fmt: skip
        return out

    def reports(self, timeout: float = 1.0) -> list[dict[str, Any]]:
        asked = {
            c.index: self.shared.slots[c.index].request_report() for c in self.children.values()
        }
        answers: dict[int, dict[str, Any]] = {}
        deadline = time.monotonic() + timeout
        while asked and time.monotonic() < deadline:
            for index, request_id in list(asked.items()):
                report = self.shared.slots[index].read_report(request_id)
                if report is not None:
                    answers[index] = report
                    del asked[index]
            if asked:
                time.sleep(0.01)
        return list(answers.values())

    def processed(self) -> int:
        return sum(self.shared.slots[c.index].read().processed for c in self.children.values())

    def pids(self) -> list[int]:
        return [c.pid for c in self.children.values()]


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        signum = os.WTERMSIG(status)
        try:
            name = signal.Signals(signum).name
        except ValueError:
            name = str(signum)
        return f"was killed by {name}"
    return f"exited with code {os.WEXITSTATUS(status)}"
