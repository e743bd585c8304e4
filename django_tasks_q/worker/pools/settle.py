"""Tasks the prefork supervisor settles itself: their process cannot.

* a child died running a task: ``WorkerLostError`` FAILURE (acked late), LOST
  (acked early), or nothing yet when the task asked to be delivered again
  (``reject_on_worker_lost``) — the death is counted, so a task that keeps
  killing processes is dead-lettered after ``MAX_DELIVERIES``;
* a child was killed at its task's hard time limit, or to terminate its task:
  the failure callbacks (errbacks, chord failure) or the ``task_revoked`` signal.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ... import signals, states
from ...exceptions import WorkerLostError
from ...request import Request
from .. import keptmessage

if TYPE_CHECKING:
    from ..slots import SlotState
    from ..worker import Worker
    from .prefork import Child, PreforkPool

logger = logging.getLogger("django_tasks_q.worker")


def request_of(worker: Worker, state: SlotState) -> Request:
    """A minimal request for the task of ``state`` (enough to store its outcome)."""
    return Request(id=state.task_id, task=state.task_name, hostname=worker.hostname)


def task_lost(pool: PreforkPool, child: Child, state: SlotState, how: str) -> None:
    """``child`` died (``how``) while running the task of ``state``."""
    exc = WorkerLostError(
        f"Worker process {child.pid} {how} while running task {state.task_name}[{state.task_id}]"
    )
    store = pool.worker.store
    if not state.acks_late:
        logger.error("%s; the message was acked before it ran, so the task is LOST", exc)
        store.store_result(state.task_id, exc, states.LOST, request=request_of(pool.worker, state))
        fail_callbacks(pool, child, state, exc)
        return
    count = pool.shared.record_lost(state.task_id)
    if state.reject_on_worker_lost and not pool.cold:
        logger.error(
            "%s; it will be delivered again (death %d of at most %d)",
            exc, count, pool.worker.max_deliveries,
        )  # fmt: skip
        return
    if pool.cold:
        return  # a cold stop requeued it: it runs again elsewhere
    logger.error("%s; stored as FAILURE (set reject_on_worker_lost=True to run it again)", exc)
    store.mark_as_failure(
        state.task_id, exc, f"WorkerLostError: {exc}", request=request_of(pool.worker, state)
    )
    fail_callbacks(pool, child, state, exc)


def fail_callbacks(pool: PreforkPool, child: Child, state: SlotState, exc: BaseException) -> None:
    """Errbacks and chord failure of a task the tracer could not finish."""
    from ...registry import tasks

    worker = pool.worker
    worker.events.send("task-failed", uuid=state.task_id, exception=repr(exc), traceback="")
    data = pool.shared.slots[child.index].kept_message(state.task_id)
    task = tasks.get(state.task_name)
    if data is None or task is None:
        return
    try:
        from ...callbacks import on_failure
        from ...execution import ExceptionInfo

        request = keptmessage.rebuild_request(data, worker)
        einfo = ExceptionInfo(exc)
        signals.task_failure.send(
            sender=task, task_id=state.task_id, exception=exc, args=request.args,
            kwargs=request.kwargs, traceback=None, einfo=einfo, request=request,
        )  # fmt: skip
        on_failure(task, request, exc, einfo, worker.store)
    except Exception:
        logger.exception(
            "Could not run the failure callbacks of task %s[%s]", state.task_name, state.task_id
        )


def revoked_callbacks(worker: Worker, state: SlotState, signum: int) -> None:
    """``task_revoked`` and its event, for a task terminated with ``signum``."""
    from ...registry import tasks

    task = tasks.get(state.task_name)
    signals.task_revoked.send(
        sender=task,
        request=request_of(worker, state),
        terminated=True,
        signum=signum,
        expired=False,
    )
    worker.events.send(
        "task-revoked", uuid=state.task_id, terminated=True, signum=signum, expired=False
    )
