"""What happens in the worker when a chord member or a chain link finishes.

* :func:`on_chord_part_return`: a header member finished (success or final failure).
  It decrements the chord's counter in the result store, idempotently per member
  task id (a member redelivered after a crash is not counted twice); the one call
  that brings the counter to zero reads the members' results, in header order, and
  sends the body, or fails it with :class:`ChordError` when a member failed.
* :func:`propagate_chain_failure`: a chain link failed; the links that will never
  run are marked FAILURE with the same error (so ``get()`` on the chain's result
  raises instead of waiting forever), and a chord they belonged to is told.
"""

from __future__ import annotations

import logging
import time
import traceback as tb_module
from typing import TYPE_CHECKING, Any

from .. import states
from ..canvas import Signature, signature_from_dict
from ..exceptions import ChordError
from ..request import Request
from .base import atomic_with_broker, kind, leaves

if TYPE_CHECKING:
    from ..results.base import ChordReady, ResultStore

logger = logging.getLogger("django_tasks_q.workflows")

#: how long the member that completes a chord waits for results still being written
RESULTS_GRACE = 5.0


def on_chord_part_return(
    task: Any, request: Request, retval_or_exc: Any, store: ResultStore | None, failed: bool
) -> None:
    """Count one finished header member; fire (or fail) the body after the last one."""
    group_id = request.group
    if not group_id:
        logger.warning(
            "Task %s[%s] has a chord but no group id; not counted.", request.task, request.id
        )
        return
    if store is None:  # eager mode: chord.apply() runs header and body itself
        return
    # A buffering store (the worker's) writes what it holds before counting, so the
    # member that completes the chord reads every result. With django:// and the
    # database store, counting and sending the body commit together.
    with atomic_with_broker():
        ready = store.chord_part_done(group_id, member_id=request.id)
        if ready is None:
            return
        own = (request.id, retval_or_exc, failed)
        fire_chord(ready, store, request, own)


def fire_chord(
    ready: ChordReady, store: ResultStore, request: Request, own: tuple | None = None
) -> None:
    """Send the body with the members' results, or fail it with ChordError."""
    body = signature_from_dict(ready.body)
    try:
        values, error = _collect(store, list(ready.result_ids), own)
    except Exception as exc:  # the store is unreachable: the body must not hang silently
        logger.exception("Chord %s: could not read the members' results", ready.group_id)
        values, error = None, ChordError(f"Chord {ready.group_id}: could not read results: {exc!r}")
    if error is None:
        try:
            body.apply_async((values,), parent_id=request.id, root_id=request.root_id or request.id)
            return
        except Exception as exc:
            logger.exception("Chord %s: could not send the body %r", ready.group_id, body)
            error = ChordError(f"Callback error: {exc!r}")
    chord_error(body, error, request, store)


def _collect(
    store: ResultStore, ids: list[str], own: tuple | None
) -> tuple[list[Any] | None, ChordError | None]:
    """Member values in header order, or the ChordError naming the first failed one."""
    from ..results.errors import exception_from_dict

    metas = store.get_many_meta(ids)
    if own is not None and not own[2] and own[0] in metas:
        metas[own[0]] = {**metas[own[0]], "status": states.SUCCESS, "result": own[1]}
    deadline = time.monotonic() + RESULTS_GRACE
    delay = 0.01
    while True:
        waiting = [i for i in ids if metas[i]["status"] not in states.READY_STATES]
        if not waiting or time.monotonic() >= deadline:
            break
        time.sleep(delay)  # a result write still in flight elsewhere; rare and bounded
        delay = min(delay * 2, 0.5)
        metas.update(store.get_many_meta(waiting))
    for task_id in ids:
        meta = metas[task_id]
        status = meta["status"]
        if status in states.PROPAGATE_STATES:
            exc = exception_from_dict(meta.get("result"))
            return None, ChordError(f"Dependency {task_id} raised {exc!r}")
        if status not in states.READY_STATES:
            return None, ChordError(f"Dependency {task_id} has no result (state {status}).")
    return [metas[i]["result"] for i in ids], None


def terminal(sig: Signature) -> Signature:
    """The task whose completion completes ``sig`` (a group stands for itself)."""
    while True:
        t = kind(sig)
        if t == "chain" and sig.tasks:
            sig = sig.tasks[-1]
        elif t == "chord" and sig.body is not None:
            sig = sig.body
        else:
            return sig


def _fake_request(sig: Signature, request: Request, errbacks: list | None = None) -> Request:
    """A request describing ``sig``, which will not run, for stores and errbacks."""
    opts = sig.options
    return Request(
        id=opts.get("task_id"),
        task=sig.task,
        args=list(sig.args),
        kwargs=dict(sig.kwargs),
        root_id=request.root_id or request.id,
        parent_id=request.id,
        group=opts.get("group_id"),
        group_index=opts.get("group_index"),
        chord=opts.get("chord"),
        errbacks=errbacks,
        is_eager=request.is_eager,
        called_directly=False,
        delivery_info={"is_eager": True} if request.is_eager else {},
    )


def _errbacks(sig: Signature) -> list[dict]:
    """Every errback linked to ``sig`` or to anything inside it, once each."""
    found: list[dict] = []
    stack = [sig]
    while stack:
        node = stack.pop()
        items = node.options.get("link_error") or []
        for eb in [items] if isinstance(items, dict) else items:
            if eb not in found:
                found.append(eb)
        t = kind(node)
        if t in ("chain", "group"):
            stack.extend(node.tasks)
        elif t == "chord":
            stack.append(node.tasks)
            if node.body is not None:
                stack.append(node.body)
    return found


def fail_unrun(
    sig: Signature, exc: BaseException, traceback: str, request: Request, store: ResultStore | None
) -> None:
    """Mark every task of ``sig`` (which will never run) FAILURE; tell chords they belong to."""
    for leaf in leaves(sig):
        fake = _fake_request(leaf, request)
        if store is not None and fake.id:
            store.mark_as_failure(fake.id, exc, traceback, request=fake)
        if fake.chord and fake.group:
            on_chord_part_return(None, fake, exc, store, failed=True)


def chord_error(
    body: Signature, exc: ChordError, request: Request, store: ResultStore | None
) -> None:
    """Fail the chord's result with ``exc`` and call the body's errbacks."""
    from ..callbacks import call_errback
    from ..execution import ExceptionInfo

    logger.warning("Chord body %r will not run: %s", body, exc)
    traceback = "".join(tb_module.format_exception_only(type(exc), exc))
    fail_unrun(body, exc, traceback, request, store)
    errbacks = _errbacks(body)
    fake = _fake_request(terminal(body), request, errbacks)
    einfo = ExceptionInfo(exc)
    for errback in errbacks:
        try:
            call_errback(signature_from_dict(errback), fake, exc, einfo)
        except Exception:
            logger.exception("Could not apply errback %r of chord body %r", errback, body)


def chord_error_eager(
    body: Signature, failure: tuple[str, BaseException], header_result: Any, opts: dict
) -> ChordError:
    """Eager chords: the ChordError for ``failure``, after calling the body's errbacks."""
    task_id, cause = failure
    exc = ChordError(f"Dependency {task_id} raised {cause!r}")
    request = Request(
        id=task_id, root_id=opts.get("root_id"), is_eager=True, called_directly=False,
        delivery_info={"is_eager": True},
    )  # fmt: skip
    chord_error(body, exc, request, store=None)
    return exc


def propagate_chain_failure(
    request: Request, exc: BaseException, traceback: str | None, store: ResultStore | None
) -> None:
    """The links after a failed one will not run: fail their results, settle their chords."""
    for link in request.chain or ():
        try:
            fail_unrun(signature_from_dict(link), exc, traceback or "", request, store)
        except Exception:
            logger.exception("Could not mark chain link %r of task %s failed", link, request.id)
