"""What every wait on a result shares: the rule that a task never blocks on another
task, and one overall deadline for a wait made of several smaller ones.

Used by :meth:`AsyncResult.get() <django_tasks_q.result.AsyncResult.get>` and
:meth:`ResultSet.join() <django_tasks_q.groupresult.ResultSet.join>`.
"""

from __future__ import annotations

import time

from ._state import in_task
from .exceptions import RuntimeWarningError

SYNC_SUBTASK_MESSAGE = (
    "Never call result.get() inside a task: the worker slot blocks until the other "
    "task finishes, and once every slot waits like this the pool deadlocks. Chain the "
    "tasks (a.s() | b.s()), use a chord, or a link callback instead. If you accept the "
    "risk, pass disable_sync_subtasks=False."
)


def assert_will_not_block() -> None:
    """Raise :class:`RuntimeWarningError` when called from inside a running task."""
    if in_task():
        raise RuntimeWarningError(SYNC_SUBTASK_MESSAGE)


def deadline_after(timeout: float | None) -> float | None:
    """The ``time.monotonic()`` value ``timeout`` seconds from now (None: no deadline)."""
    return None if timeout is None else time.monotonic() + timeout


def seconds_left(deadline: float | None) -> float | None:
    """Seconds until ``deadline`` (negative once passed; None: no deadline)."""
    return None if deadline is None else deadline - time.monotonic()


def has_passed(deadline: float | None) -> bool:
    remaining = seconds_left(deadline)
    return remaining is not None and remaining <= 0
