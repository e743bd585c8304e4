"""What follows a task's outcome: link callbacks, the next link of a chain, errbacks, chords."""

from __future__ import annotations

import inspect
import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .canvas import Signature, signature_from_dict

if TYPE_CHECKING:
    from .execution import ExceptionInfo
    from .request import Request
    from .results.base import ResultStore
    from .task import Task

logger = logging.getLogger("django_tasks_q.callbacks")

_eager = threading.local()


def _lineage(request: Request) -> dict[str, Any]:
    return {"parent_id": request.id, "root_id": request.root_id or request.id}


def run_eager(job: Callable[[], Any]) -> None:
    """Run ``job`` now, or after the eager job running in this thread returns.

    Eager follow-ups (the next chain link, link callbacks) would otherwise nest one
    tracer inside the previous one's, so a 1,000-link chain would exhaust the stack.
    """
    pending: deque | None = getattr(_eager, "pending", None)
    if pending is not None:
        pending.append(job)
        return
    _eager.pending = pending = deque([job])
    try:
        while pending:
            pending.popleft()()
    finally:
        _eager.pending = None


def _send(sig: Signature, args: tuple, request: Request, **options: Any) -> None:
    opts = {**_lineage(request), **options}
    args = args if not sig.immutable else ()
    if request.is_eager:
        run_eager(lambda: sig.apply(args, **opts))
    else:
        sig.apply_async(args, **opts)


def on_success(task: Task, request: Request, retval: Any, store: ResultStore | None) -> None:
    for callback in request.callbacks or ():
        try:
            _send(signature_from_dict(callback), (retval,), request)
        except Exception:
            logger.exception(
                "Could not apply link callback %r of task %s[%s]", callback, task.name, request.id
            )
    if request.chain:
        chain = list(request.chain)
        nxt = signature_from_dict(chain.pop())
        _send(nxt, (retval,), request, chain=chain or None)
    if request.chord:
        from .workflows import on_chord_part_return

        on_chord_part_return(task, request, retval, store, failed=False)


def on_failure(
    task: Task,
    request: Request,
    exc: BaseException,
    einfo: ExceptionInfo,
    store: ResultStore | None,
) -> None:
    for errback in request.errbacks or ():
        try:
            call_errback(signature_from_dict(errback), request, exc, einfo)
        except Exception:
            logger.exception(
                "Could not apply errback %r of task %s[%s]", errback, task.name, request.id
            )
    if request.chain:
        from .workflows import propagate_chain_failure

        propagate_chain_failure(request, exc, einfo.traceback, store)
    if request.chord:
        from .workflows import on_chord_part_return

        on_chord_part_return(task, request, exc, store, failed=True)


def _is_new_style(errback: Signature) -> bool:
    """True when the errback's function takes ``(request, exc, traceback)`` (besides partials)."""
    if errback.get("subtask_type"):
        return False
    try:
        task = errback.type
    except Exception:  # not registered here: send it by name, old style
        return False
    try:
        fun = task._fun or task.run
        params = list(inspect.signature(fun).parameters.values())
    except (TypeError, ValueError):
        return False
    if task._bind:
        params = params[1:]
    if any(p.kind == p.VAR_POSITIONAL for p in params):
        return True
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) - len(errback.args) >= 3


def call_errback(
    errback: Signature, request: Request, exc: BaseException, einfo: ExceptionInfo
) -> None:
    """New-style errbacks take ``(request, exc, traceback)``; old-style take the task id.

    A new-style errback runs inline in the worker (the request cannot be serialised);
    an old-style one is sent as a task with the failed task's id as first argument.
    """
    if _is_new_style(errback):
        errback.type(request, exc, einfo.traceback, *errback.args, **errback.kwargs)
    else:
        _send(errback, (request.id,), request)


def on_not_run(
    task: Task | None,
    request: Request | None,
    exc: BaseException,
    store: ResultStore | None,
    call_errbacks: bool = True,
) -> None:
    """For the worker: ``request`` will never finish (revoked, expired, killed, refused).

    Calls its errbacks (unless ``call_errbacks`` is false, as for a revoke), fails the
    chain links that were to follow it, and counts it as a failed chord member, so no
    workflow waits forever on a task that is gone.
    """
    if request is None:
        return
    from .execution import ExceptionInfo

    einfo = ExceptionInfo(exc)
    try:
        if call_errbacks:
            for errback in request.errbacks or ():
                call_errback(signature_from_dict(errback), request, exc, einfo)
        if request.chain:
            from .workflows import propagate_chain_failure

            propagate_chain_failure(request, exc, einfo.traceback, store)
        if request.chord:
            from .workflows import on_chord_part_return

            on_chord_part_return(task, request, exc, store, failed=True)
    except Exception:
        logger.exception("Could not settle the workflow of task %s[%s]", request.task, request.id)


def on_redelivered_finished(task: Task | None, request: Request, store: ResultStore | None) -> None:
    """For the worker: ``request`` was redelivered but its result is already stored.

    Its process may have died after writing the result and before counting it in its
    chord; counting is idempotent per member, so count it (again) now. The chord then
    completes exactly once whichever of the two deliveries got there.
    """
    if not request.chord or store is None:
        return
    from . import states
    from .results.errors import exception_from_dict
    from .workflows import on_chord_part_return

    try:
        meta = store.get_task_meta(request.id)
        failed = meta["status"] in states.PROPAGATE_STATES
        value = exception_from_dict(meta.get("result")) if failed else meta.get("result")
        on_chord_part_return(task, request, value, store, failed=failed)
    except Exception:
        logger.exception(
            "Could not count redelivered chord member %s[%s]", request.task, request.id
        )
