"""Soft and hard time limits.

* **Which limits apply.** ``control.time_limit`` overrides, then the message's
  ``timelimit`` header (``apply_async(time_limit=...)`` or the task's options),
  then the task's attributes, then ``--time-limit``/``--soft-time-limit``, then
  ``TASKS_Q['TIME_LIMIT']``/``['SOFT_TIME_LIMIT']``.
* **prefork and solo.** The soft limit is ``setitimer(ITIMER_REAL)``: SIGALRM
  raises :class:`SoftTimeLimitExceeded` in the task, which may catch it and clean
  up. In prefork the hard limit is the supervisor's: it kills the process
  running the task (see ``pools/prefork.py``). Solo has no second process, so
  its hard limit raises :class:`TimeLimitExceeded` the same way; a task blocked
  inside C code that does not return to Python cannot be stopped there.
* **threads.** Signals reach only the main thread, so limits are raised in the
  task's thread with ``PyThreadState_SetAsyncExc``: the exception arrives when
  the thread next runs Python bytecode. A thread blocked in ``time.sleep``, a
  socket read or a C extension sees it only when that call returns, and nothing
  can kill a thread. Use prefork for tasks that need a hard stop.
"""

from __future__ import annotations

import ctypes
import heapq
import itertools
import signal
import threading
import time
from typing import TYPE_CHECKING, Any

from ..conf import settings
from ..exceptions import SoftTimeLimitExceeded, TimeLimitExceeded

if TYPE_CHECKING:
    from .jobs import Job
    from .ratelimits import TaskTable


def limits_for(
    job: Job, table: TaskTable | None, defaults: tuple[Any, Any]
) -> tuple[float | None, float | None]:
    """``(soft, hard)`` seconds for ``job`` (None: no limit)."""
    if table is not None:
        override = table.time_limits(job.task.name)
        if override is not None:
            return override
    hard, soft = job.request.timelimit or (None, None)  # Celery's header order: [hard, soft]
    if soft is None:
        soft = job.task.soft_time_limit
    if hard is None:
        hard = job.task.time_limit
    if soft is None:
        soft = defaults[0] if defaults[0] is not None else settings.SOFT_TIME_LIMIT
    if hard is None:
        hard = defaults[1] if defaults[1] is not None else settings.TIME_LIMIT
    return (float(soft) if soft else None, float(hard) if hard else None)


class AlarmLimits:
    """SIGALRM-based limits for the main thread (prefork children and solo)."""

    def __init__(self, enforce_hard: bool) -> None:
        self.enforce_hard = enforce_hard
        self._armed = False
        self._hard_after: float | None = None
        self._previous: Any = None

    def install(self) -> None:
        self._previous = signal.signal(signal.SIGALRM, self._on_alarm)

    def uninstall(self) -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)
        if self._previous is not None:
            signal.signal(signal.SIGALRM, self._previous)

    def arm(self, soft: float | None, hard: float | None) -> None:
        if not self.enforce_hard:
            hard = None
        if soft is not None and hard is not None and soft >= hard:
            soft = None  # the hard limit comes first
        first = soft if soft is not None else hard
        if first is None:
            return
        self._hard_after = (hard - soft) if (soft is not None and hard is not None) else None
        self._phase_soft = soft is not None
        self._armed = True
        signal.setitimer(signal.ITIMER_REAL, first)

    def disarm(self) -> None:
        if self._armed:
            self._armed = False
            signal.setitimer(signal.ITIMER_REAL, 0)

    def _on_alarm(self, signum: int, frame: Any) -> None:
        if not self._armed:
            return
        if self._phase_soft:
            if self._hard_after:
                self._phase_soft = False
                signal.setitimer(signal.ITIMER_REAL, self._hard_after)
            else:
                self._armed = False
            raise SoftTimeLimitExceeded("soft time limit exceeded")
        self._armed = False
        raise TimeLimitExceeded("hard time limit exceeded")


def raise_in_thread(thread_id: int, exc_type: type[BaseException]) -> bool:
    """Ask the interpreter to raise ``exc_type`` in thread ``thread_id``; False if it is gone."""
    done = ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), ctypes.py_object(exc_type)
    )
    if done > 1:  # pragma: no cover - would mean a corrupt thread table
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), None)
        return False
    return done == 1


class ThreadWatchdog:
    """Raises soft and hard limits in pool threads (best effort, see the module doc)."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, int, str, type[BaseException]]] = []
        self._live: dict[int, str] = {}  # thread id -> the task id it runs now
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="tasks_q-time-limits", daemon=True)
        self._thread.start()

    def arm(self, task_id: str, soft: float | None, hard: float | None) -> None:
        thread_id = threading.get_ident()
        now = time.monotonic()
        with self._cond:
            self._live[thread_id] = task_id
            if soft is not None:
                heapq.heappush(
                    self._heap,
                    (now + soft, next(self._seq), thread_id, task_id, SoftTimeLimitExceeded),
                )
            if hard is not None:
                heapq.heappush(
                    self._heap, (now + hard, next(self._seq), thread_id, task_id, TimeLimitExceeded)
                )
            self._cond.notify()

    def disarm(self) -> None:
        """The calling thread's task is over: no limit reaches it any more."""
        thread_id = threading.get_ident()
        with self._cond:
            self._live.pop(thread_id, None)
            # A limit raised just before this and not yet delivered: cancel it.
            ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), None)

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()

    def _run(self) -> None:
        with self._cond:
            while not self._stopped:
                timeout = None if not self._heap else max(0.0, self._heap[0][0] - time.monotonic())
                self._cond.wait(timeout)
                now = time.monotonic()
                while self._heap and self._heap[0][0] <= now:
                    _, _, thread_id, task_id, exc_type = heapq.heappop(self._heap)
                    if self._live.get(thread_id) == task_id:
                        raise_in_thread(thread_id, exc_type)
