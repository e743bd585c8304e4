"""The one place a task function is called, and everything that records its outcome.

``execute()`` is shared by the worker and by eager mode: it pushes the request,
sends the signals, runs the body, turns ``Retry``/``Reject``/``Ignore`` and
``autoretry_for`` into outcomes, stores the state, and fires callbacks.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import traceback as tb_module
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import _state, signals, states
from .exceptions import Ignore, Reject, Retry
from .request import Request

if TYPE_CHECKING:
    from .result import EagerResult
    from .results.base import ResultStore
    from .task import Task

logger = logging.getLogger("django_tasks_q.execution")


@dataclass
class Outcome:
    """What happened to one execution; the worker decides ack/requeue from it."""

    state: str
    retval: Any = None
    exc: BaseException | None = None
    traceback: str | None = None
    requeue: bool = False
    retry_sig: Any = None

    @property
    def failed(self) -> bool:
        return self.state == states.FAILURE


class ExceptionInfo:
    """What hooks receive as ``einfo``: the exception, its type and formatted traceback."""

    def __init__(self, exc: BaseException) -> None:
        self.exception = exc
        self.type = type(exc)
        self.traceback = "".join(tb_module.format_exception(type(exc), exc, exc.__traceback__))

    def __str__(self) -> str:
        return self.traceback


# -- coroutines -------------------------------------------------------------
_loops = threading.local()


def run_coroutine(coro: Any) -> Any:
    """Run an ``async def`` task body on this thread's long-lived event loop."""
    loop = getattr(_loops, "loop", None)
    if loop is None or loop.is_closed():
        loop = _loops.loop = asyncio.new_event_loop()
    return loop.run_until_complete(coro)


# -- retries ------------------------------------------------------------------
def backoff_countdown(task: Task, retries: int) -> float:
    factor = task.retry_backoff
    if not factor:
        return task.retry_kwargs.get("countdown", task.default_retry_delay)
    factor = 1 if factor is True else float(factor)
    countdown = min(task.retry_backoff_max, factor * (2**retries))
    if task.retry_jitter:
        countdown = random.uniform(0, countdown)
    return max(0.0, countdown)


def _autoretry(task: Task, request: Request, exc: Exception) -> Retry | None:
    if not task.autoretry_for or not isinstance(exc, task.autoretry_for):
        return None
    if task.dont_autoretry_for and isinstance(exc, task.dont_autoretry_for):
        return None
    kwargs = dict(task.retry_kwargs)
    if task.retry_backoff:
        kwargs["countdown"] = backoff_countdown(task, request.retries)
    try:
        return task.retry(exc=exc, throw=False, **kwargs)
    except Retry as r:  # pragma: no cover - throw=False returns it
        return r


# -- the tracer ------------------------------------------------------------------
def execute(task: Task, request: Request, store: ResultStore | None) -> Outcome:
    """Run ``task`` for ``request``; record the outcome in ``store`` (None: record nothing)."""
    from .callbacks import on_failure, on_success

    args, kwargs = request.args, request.kwargs
    keep_result = not (request.ignore_result or task.effective_ignore_result) or bool(request.chord)
    token = _state.current_request.set(request)
    signals.task_prerun.send(
        sender=task, task_id=request.id, task=task, args=args, kwargs=kwargs, request=request
    )
    outcome: Outcome
    einfo: ExceptionInfo | None = None
    try:
        if store is not None and keep_result and task.effective_track_started:
            store.mark_as_started(request.id, request=request)
        task.before_start(request.id, args, kwargs)
        retval = task.run(*args, **kwargs)
        if asyncio.iscoroutine(retval):
            retval = run_coroutine(retval)
    except Retry as retry:
        outcome, einfo = _on_retry(task, request, retry, store)
    except Ignore:
        outcome = Outcome(states.IGNORED)
    except Reject as reject:
        outcome = Outcome(states.REJECTED, exc=reject, requeue=reject.requeue)
        logger.info("Task %s[%s] rejected: %r", task.name, request.id, reject.reason)
    except Exception as exc:
        retry = _autoretry(task, request, exc) if not isinstance(exc, Retry) else None
        if retry is not None:
            outcome, einfo = _on_retry(task, request, retry, store)
        else:
            einfo = ExceptionInfo(exc)
            outcome = Outcome(states.FAILURE, exc=exc, traceback=einfo.traceback)
            if store is not None and (keep_result or task.store_errors_even_if_ignored):
                store.mark_as_failure(request.id, exc, einfo.traceback, request=request)
            _safe_hook(task.on_failure, exc, request.id, args, kwargs, einfo)
            signals.task_failure.send(
                sender=task, task_id=request.id, exception=exc, args=args, kwargs=kwargs,
                traceback=exc.__traceback__, einfo=einfo, request=request,
            )  # fmt: skip
            logger.error(
                "Task %s[%s] raised %s: %s", task.name, request.id, type(exc).__name__, exc,
                exc_info=not request.is_eager,
            )  # fmt: skip
            on_failure(task, request, exc, einfo, store)
    else:
        outcome = Outcome(states.SUCCESS, retval=retval)
        if store is not None and keep_result:
            store.mark_as_done(request.id, retval, request=request)
        _safe_hook(task.on_success, retval, request.id, args, kwargs)
        signals.task_success.send(sender=task, result=retval, request=request)
        on_success(task, request, retval, store)
    finally:
        _state.current_request.reset(token)
    _safe_hook(task.after_return, outcome.state, outcome.retval, request.id, args, kwargs, einfo)
    signals.task_postrun.send(
        sender=task, task_id=request.id, task=task, args=args, kwargs=kwargs,
        retval=outcome.retval if outcome.exc is None else outcome.exc, state=outcome.state,
        request=request,
    )  # fmt: skip
    return outcome


def _on_retry(
    task: Task, request: Request, retry: Retry, store: ResultStore | None
) -> tuple[Outcome, ExceptionInfo]:
    exc = retry.exc if retry.exc is not None else retry
    einfo = ExceptionInfo(exc)
    if store is not None:
        store.mark_as_retry(request.id, exc, einfo.traceback, request=request)
    _safe_hook(task.on_retry, exc, request.id, request.args, request.kwargs, einfo)
    signals.task_retry.send(sender=task, request=request, reason=retry, einfo=einfo)
    logger.info("Task %s[%s] retry: %s", task.name, request.id, retry)
    return Outcome(states.RETRY, exc=exc, traceback=einfo.traceback, retry_sig=retry.sig), einfo


def _safe_hook(hook: Any, *args: Any) -> None:
    try:
        hook(*args)
    except Exception:
        logger.exception("Task hook %s raised", getattr(hook, "__qualname__", hook))


# -- eager ----------------------------------------------------------------------
def apply_eager(
    task: Task,
    args: list,
    kwargs: dict,
    *,
    task_id: str | None = None,
    throw: bool | None = None,
    retries: int = 0,
    link: Any = None,
    link_error: Any = None,
    headers: dict | None = None,
    **options: Any,
) -> EagerResult:
    """Run ``task`` now, in this process, and wrap the outcome in an EagerResult."""
    from .conf import settings
    from .message import new_id
    from .result import EagerResult

    def as_dicts(value: Any) -> list[dict] | None:
        if value is None:
            return None
        return [dict(s) for s in (value if isinstance(value, list | tuple) else [value])]

    task_id = task_id or new_id()
    parent = _state.current_request.get()
    request = Request(
        id=task_id,
        task=task.name,
        args=args,
        kwargs=kwargs,
        retries=retries,
        is_eager=True,
        called_directly=False,
        callbacks=as_dicts(link),
        errbacks=as_dicts(link_error),
        chain=options.get("chain"),
        chord=options.get("chord"),
        group=options.get("group_id"),
        group_index=options.get("group_index"),
        parent_id=options.get("parent_id") or (parent.id if parent else None),
        root_id=options.get("root_id") or (parent.root_id if parent else None) or task_id,
        headers=dict(headers or {}),
        delivery_info={"is_eager": True},
    )
    outcome = execute(task, request, store=None)
    while outcome.state == states.RETRY and outcome.retry_sig is not None:
        sig = outcome.retry_sig
        request.retries = sig.options.get("retries", request.retries + 1)
        request.args = list(sig.args)
        request.kwargs = dict(sig.kwargs)
        outcome = execute(task, request, store=None)
    if throw is None:
        throw = settings.EAGER_PROPAGATES
    if throw and outcome.exc is not None and outcome.state == states.FAILURE:
        raise outcome.exc
    value = outcome.exc if outcome.exc is not None else outcome.retval
    return EagerResult(
        task_id, value, outcome.state, traceback=outcome.traceback, name=task.name,
        args=args, kwargs=kwargs, retries=request.retries,
    )  # fmt: skip
