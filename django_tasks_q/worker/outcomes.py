"""What becomes of a message once its fate is known: ack, requeue, dead letter, state.

Rules (acks follow the state write, see ``resultbuffer.py``):

* SUCCESS, FAILURE, RETRY, IGNORED: ack after the state is written. With
  ``acks_late`` and ``acks_on_failure_or_timeout=False`` a FAILURE is kept as a
  dead letter instead of being dropped.
* ``Reject(requeue=True)``: the message goes back to its queue (re-published if
  it was acked early). ``Reject()``: dead letter, ack.
* revoked or expired before running: REVOKED, ack, ``task_revoked``.
* refused (bad input, unknown task, too many deliveries): one log line, dead
  letter, FAILURE when the task id is known, ack.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from .. import signals, states
from ..callbacks import on_not_run
from ..exceptions import TaskRevokedError
from ..request import Request

if TYPE_CHECKING:
    from ..execution import Outcome
    from .engine import Engine
    from .jobs import Job

logger = logging.getLogger("django_tasks_q.worker")


def dead_letter(raw: Any, reason: str, detail: str, task_id: str | None, task_name: str | None, queue: str) -> None:
    from ..deadletter import dead_letter as store_dead_letter

    store_dead_letter(raw, reason, detail, task_id=task_id, task_name=task_name, queue=queue)


def refuse(
    engine: Engine,
    raw: Any,
    queue: str,
    reason: str,
    detail: str,
    task_id: str | None = None,
    task_name: str | None = None,
    exc: BaseException | None = None,
    request: Request | None = None,
) -> None:
    """Report a message that will not run: log, dead letter, FAILURE if we know the id, ack."""
    label = f"{task_name or '?'}[{task_id or '?'}]"
    logger.error("Refused message %s from queue %r (%s): %s", label, queue, reason, detail)
    try:
        dead_letter(raw, reason, detail, task_id, task_name, queue)
        if task_id and exc is not None:
            stub = request or Request(id=task_id, task=task_name, hostname=engine.hostname)
            engine.store.mark_as_failure(task_id, exc, f"{type(exc).__name__}: {detail}", request=stub)
            on_not_run(None, stub, exc, engine.store)
    except Exception:
        logger.exception("Could not keep refused message %s as a dead letter; it goes back to its queue", label)
        engine.consumer.requeue(raw)
        return
    engine.consumer.ack(raw)


def settle_without_running(engine: Engine, job: Job, state: str, exc: BaseException) -> None:
    """Store ``state`` with ``exc`` for a task that will not run, and ack its message."""
    logger.warning("Task %s[%s]: %s", job.name, job.id, exc)
    if state == states.FAILURE:
        engine.buffer.mark_as_failure(job.id, exc, f"{type(exc).__name__}: {exc}", request=job.request)
    else:
        engine.buffer.store_result(job.id, exc, state, request=job.request)
    on_not_run(job.task, job.request, exc, engine.buffer, call_errbacks=state == states.FAILURE)
    engine.buffer.job_done(job)


def revoked(engine: Engine, job: Job, *, expired: bool = False, terminated: bool = False, signum: Any = None) -> None:
    """REVOKED (ack after the write), ``task_revoked`` and the event."""
    reason = "expired" if expired else "revoked"
    logger.info("Discarding %s task %s[%s]", reason, job.name, job.id)
    engine.buffer.mark_as_revoked(job.id, reason=reason, request=job.request)
    on_not_run(job.task, job.request, TaskRevokedError(reason), engine.buffer, call_errbacks=False)
    engine.buffer.job_done(job)
    signals.task_revoked.send(
        sender=job.task, request=job.request, terminated=terminated, signum=signum, expired=expired
    )
    engine.events.send("task-revoked", uuid=job.id, terminated=terminated, signum=signum, expired=expired)


def dispose(engine: Engine, job: Job, outcome: Outcome) -> None:
    """Settle ``job``'s message after it ran, from the tracer's ``outcome``."""
    state = outcome.state
    runtime = time.monotonic() - (job.started or job.received)
    if state == states.REJECTED:
        if outcome.requeue:
            if job.acked:
                engine.consumer.republish(job.raw, job.queue)
            else:
                engine.consumer.requeue(job.raw)
                job.acked = True
            return
        detail = f"Task {job.name}[{job.id}] raised {outcome.exc!r}"
        dead_letter(job.raw, "rejected", detail, job.id, job.name, job.queue)
        engine.buffer.job_done(job)
        return
    if state == states.FAILURE and job.acks_late and not job.task.acks_on_failure_or_timeout:
        detail = f"Task {job.name}[{job.id}] failed with {outcome.exc!r} (acks_on_failure_or_timeout=False)"
        dead_letter(job.raw, "failed", detail, job.id, job.name, job.queue)
    engine.buffer.job_done(job)
    if engine.events.enabled:
        _send_outcome_event(engine, job, outcome, runtime)
    if engine.debug:
        logger.debug("Task %s[%s] %s in %.4fs", job.name, job.id, state, runtime)


def _send_outcome_event(engine: Engine, job: Job, outcome: Outcome, runtime: float) -> None:
    if outcome.state == states.SUCCESS:
        engine.events.send("task-succeeded", uuid=job.id, result=repr(outcome.retval), runtime=runtime)
    elif outcome.state == states.FAILURE:
        engine.events.send(
            "task-failed", uuid=job.id, exception=repr(outcome.exc), traceback=outcome.traceback
        )
    elif outcome.state == states.RETRY:
        engine.events.send(
            "task-retried", uuid=job.id, exception=repr(outcome.exc), traceback=outcome.traceback
        )


def escaped(job: Job, exc: BaseException, store: Any) -> Outcome:
    """An exception that got past the tracer (a limit firing after the body returned)."""
    import traceback as tb

    from ..execution import Outcome

    text = "".join(tb.format_exception(type(exc), exc, exc.__traceback__))
    logger.error("Task %s[%s] ended with %s: %s", job.name, job.id, type(exc).__name__, exc)
    try:
        store.mark_as_failure(job.id, exc, text, request=job.request)
    except Exception:
        logger.exception("Could not store the failure of task %s[%s]", job.name, job.id)
    return Outcome(states.FAILURE, exc=exc, traceback=text)

