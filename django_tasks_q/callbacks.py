"""What follows a task's outcome: link callbacks, the next link of a chain, errbacks, chords."""

from __future__ import annotations

import inspect
import logging
from typing import TYPE_CHECKING, Any

from .canvas import Signature, signature_from_dict

if TYPE_CHECKING:
    from .execution import ExceptionInfo
    from .request import Request
    from .results.base import ResultStore
    from .task import Task

logger = logging.getLogger("django_tasks_q.callbacks")


def _lineage(request: Request) -> dict[str, Any]:
    return {"parent_id": request.id, "root_id": request.root_id or request.id}


def _send(sig: Signature, args: tuple, request: Request, **options: Any) -> None:
    opts = {**_lineage(request), **options}
    if request.is_eager:
        sig.clone(args if not sig.immutable else (), **opts).apply()
    else:
        sig.apply_async(args if not sig.immutable else (), **opts)


def on_success(task: Task, request: Request, retval: Any, store: ResultStore | None) -> None:
    for callback in request.callbacks or ():
        try:
            _send(signature_from_dict(callback), (retval,), request)
        except Exception:
            logger.exception("Could not apply link callback %r of task %s[%s]", callback, task.name, request.id)
    if request.chain:
        chain = list(request.chain)
        nxt = signature_from_dict(chain.pop())
        _send(nxt, (retval,), request, chain=chain or None)
    if request.chord:
        from .workflows import on_chord_part_return

        on_chord_part_return(task, request, retval, store, failed=False)


def on_failure(
    task: Task, request: Request, exc: BaseException, einfo: ExceptionInfo, store: ResultStore | None
) -> None:
    for errback in request.errbacks or ():
        try:
            call_errback(signature_from_dict(errback), request, exc, einfo)
        except Exception:
            logger.exception("Could not apply errback %r of task %s[%s]", errback, task.name, request.id)
    if request.chord:
        from .workflows import on_chord_part_return

        on_chord_part_return(task, request, exc, store, failed=True)


def call_errback(errback: Signature, request: Request, exc: BaseException, einfo: ExceptionInfo) -> None:
    """New-style errbacks take ``(request, exc, traceback)``; old-style take the task id.

    An errback runs inline in the worker when it takes the request (it cannot be
    serialised), and is published with the failed task's id otherwise.
    """
    try:
        fun = errback.type._fun or errback.type.run
        params = list(inspect.signature(fun).parameters.values())
    except Exception:
        params = []
    if errback.type._bind:
        params = params[1:]
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(positional) - len(errback.args) >= 3 or any(p.kind == p.VAR_POSITIONAL for p in params):
        errback.type(request, exc, einfo.traceback, *errback.args, **errback.kwargs)
    else:
        _send(errback, (request.id,), request)
