"""Handles on task outcomes. ``AsyncResult`` lives here; ``EagerResult``
(:mod:`django_tasks_q.eagerresult`), ``ResultSet`` and ``GroupResult``
(:mod:`django_tasks_q.groupresult`) are importable from here too.

They read the configured result store (:func:`django_tasks_q.results.get_store`)
lazily, so building one never touches the store. Once a result is ready its meta is
cached on the object and never queried again.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from . import states
from .exceptions import TaskRevokedError, TimeoutError
from .result_waiting import assert_will_not_block, deadline_after, has_passed, seconds_left
from .results.base import ResultStore
from .results.errors import exception_from_dict

if TYPE_CHECKING:
    from .eagerresult import EagerResult
    from .groupresult import GroupResult, ResultSet

__all__ = [
    "AsyncResult",
    "EagerResult",
    "GroupResult",
    "ResultSet",
    "result_from_tuple",
    "store_or_default",
]

#: with parents to watch, ``get()`` waits in slices growing to this many seconds
PARENT_CHECK_MAX = 5.0


def store_or_default(backend: ResultStore | None) -> ResultStore:
    """``backend``, or the configured result store when it is None."""
    if backend is not None:
        return backend
    from .results import get_store

    return get_store()


class AsyncResult:
    """The state and outcome of one task, read from the result store."""

    def __init__(
        self,
        id: str,  # noqa: A002 - Celery's name
        backend: ResultStore | None = None,
        task_name: str | None = None,
        parent: AsyncResult | None = None,
        app: Any = None,
    ) -> None:
        if id is None:
            raise ValueError("AsyncResult needs a task id, got None.")
        self.id = str(id)
        self._backend = backend
        self._task_name = task_name
        self.parent = parent
        self._cache: dict[str, Any] | None = None
        self._exc: BaseException | None = None

    # -- plumbing --------------------------------------------------------------------

    @property
    def backend(self) -> ResultStore:
        return store_or_default(self._backend)

    @backend.setter
    def backend(self, value: ResultStore | None) -> None:
        self._backend = value

    @property
    def task_id(self) -> str:
        return self.id

    def _get_meta(self) -> dict[str, Any]:
        if self._cache is not None:
            return self._cache
        meta = self.backend.get_task_meta(self.id)
        self._set_meta(meta)
        return meta

    def _set_meta(self, meta: dict[str, Any]) -> None:
        """Keep ``meta`` when it is final: a ready result never changes again."""
        if meta.get("status") in states.READY_STATES:
            self._cache = meta

    def _exception(self, meta: dict[str, Any]) -> BaseException:
        if self._exc is not None and meta is self._cache:
            return self._exc
        exc: BaseException = exception_from_dict(meta.get("result"))
        if meta["status"] == states.REVOKED and not isinstance(exc, TaskRevokedError):
            exc = TaskRevokedError(str(exc) if meta.get("result") else "revoked")
        if meta is self._cache:
            self._exc = exc
        return exc

    def _value(self, meta: dict[str, Any]) -> Any:
        if meta["status"] in states.EXCEPTION_STATES:
            return self._exception(meta)
        return meta.get("result")

    # -- state -----------------------------------------------------------------------

    @property
    def state(self) -> str:
        return self._get_meta()["status"]

    status = state

    @property
    def result(self) -> Any:
        """The return value, the exception when failed, or the meta of a custom state."""
        return self._value(self._get_meta())

    info = result

    @property
    def traceback(self) -> str | None:
        return self._get_meta().get("traceback")

    @property
    def date_done(self) -> datetime | None:
        return self._get_meta().get("date_done")

    @property
    def name(self) -> str | None:
        return self._get_meta().get("name") or self._task_name

    @property
    def args(self) -> Any:
        return self._get_meta().get("args")

    @property
    def kwargs(self) -> Any:
        return self._get_meta().get("kwargs")

    @property
    def retries(self) -> int:
        return self._get_meta().get("retries") or 0

    @property
    def queue(self) -> str | None:
        return self._get_meta().get("queue")

    @property
    def worker(self) -> str | None:
        return self._get_meta().get("worker")

    @property
    def children(self) -> list[AsyncResult]:
        return [result_from_tuple(c, self._backend) for c in self._get_meta().get("children") or []]

    def ready(self) -> bool:
        return self.state in states.READY_STATES

    def successful(self) -> bool:
        return self.state == states.SUCCESS

    def failed(self) -> bool:
        return self.state == states.FAILURE

    # -- waiting ---------------------------------------------------------------------

    def get(
        self,
        timeout: float | None = None,
        propagate: bool = True,
        interval: float = 0.5,
        disable_sync_subtasks: bool = True,
        on_message: Callable[[dict[str, Any]], None] | None = None,
        follow_parents: bool = True,
    ) -> Any:
        """Wait for the task and return its value.

        A failed (or revoked, or lost) task re-raises its exception unless
        ``propagate=False``, which returns it instead. ``timeout`` seconds without an
        outcome raise :class:`~django_tasks_q.exceptions.TimeoutError`. With
        ``follow_parents``, a failed parent in a chain raises its error here.
        """
        if disable_sync_subtasks:
            assert_will_not_block()
        meta = self._cache
        if meta is None:
            if follow_parents and propagate and self.parent is not None:
                meta = self._wait_watching_parents(timeout, interval, on_message)
            else:
                meta = self.backend.wait_for(
                    self.id, timeout=timeout, interval=interval, on_message=on_message
                )
            self._set_meta(meta)
        return self._outcome(meta, propagate)

    wait = get

    def _outcome(self, meta: dict[str, Any], propagate: bool) -> Any:
        if meta["status"] not in states.PROPAGATE_STATES:
            return meta.get("result")
        exc = self._exception(meta)
        if not propagate:
            return exc
        self._add_remote_traceback(exc, meta)
        raise exc

    def _add_remote_traceback(self, exc: BaseException, meta: dict[str, Any]) -> None:
        tb = meta.get("traceback")
        if tb and not getattr(exc, "_tasks_q_noted", False):
            exc.add_note(f"Remote traceback of task {self.id}:\n{tb.rstrip()}")
            exc._tasks_q_noted = True  # type: ignore[attr-defined]

    def _ancestors(self) -> list[AsyncResult]:
        nodes, node = [], self.parent
        while node is not None:
            nodes.append(node)
            node = node.parent
        return nodes

    def _raise_if_parent_failed(self) -> None:
        for node in reversed(self._ancestors()):  # the earliest failure is the cause
            if not isinstance(node, AsyncResult):  # a chord's header: the chord reports it
                continue
            meta = node._get_meta()
            if meta["status"] in states.PROPAGATE_STATES:
                node._outcome(meta, propagate=True)

    def _wait_watching_parents(
        self, timeout: float | None, interval: float, on_message: Callable | None
    ) -> dict[str, Any]:
        deadline = deadline_after(timeout)
        slice_ = 0.5
        while True:
            self._raise_if_parent_failed()
            remaining = seconds_left(deadline)
            wait = slice_ if remaining is None else max(0.0, min(slice_, remaining))
            try:
                return self.backend.wait_for(
                    self.id, timeout=wait, interval=interval, on_message=on_message
                )
            except TimeoutError:
                if has_passed(deadline):
                    self._raise_if_parent_failed()
                    raise TimeoutError(
                        f"Timed out after {timeout}s waiting for task {self.id} "
                        f"(state {self.state})."
                    ) from None
            slice_ = min(slice_ * 2, PARENT_CHECK_MAX)

    # -- actions ---------------------------------------------------------------------

    def forget(self) -> None:
        """Delete the stored result (and the parent's)."""
        self._cache, self._exc = None, None
        if self.parent is not None:
            self.parent.forget()
        self.backend.forget(self.id)

    def revoke(
        self,
        terminate: bool = False,
        signal: str = "SIGTERM",
        wait: bool = False,
        timeout: float | None = None,
    ) -> None:
        """Ask workers not to run the task (and, with ``terminate``, to kill it if running).

        With ``wait``, block until the store shows the task ready (``REVOKED``), up to
        ``timeout`` seconds.
        """
        from . import control

        control.revoke(self.id, terminate=terminate, signal=signal)
        if wait:
            self.get(timeout=timeout, propagate=False, disable_sync_subtasks=False)

    # -- identity and serialisation --------------------------------------------------

    def as_tuple(self) -> tuple:
        parent = self.parent.as_tuple() if self.parent is not None else None
        return ((self.id, parent), None)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, AsyncResult):
            return other.id == self.id
        if isinstance(other, str):
            return other == self.id
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.id)

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: {self.id}>"

    def __str__(self) -> str:
        return self.id

    def __reduce__(self) -> tuple:
        return AsyncResult, (self.id, None, self._task_name, self.parent)


def result_from_tuple(r: Any, backend: ResultStore | None = None) -> Any:
    """Rebuild an AsyncResult or GroupResult from :meth:`as_tuple` output (lists work too)."""
    from .groupresult import GroupResult, ResultSet

    if isinstance(r, AsyncResult | ResultSet):
        return r
    if isinstance(r, str):
        return AsyncResult(r, backend=backend)
    res, nodes = r
    task_id, parent = res if isinstance(res, list | tuple) else (res, None)
    parent_result = result_from_tuple(parent, backend) if parent else None
    if nodes is not None:
        members = [result_from_tuple(n, backend) for n in nodes]
        return GroupResult(task_id, members, parent=parent_result, backend=backend)
    return AsyncResult(task_id, backend=backend, parent=parent_result)


def __getattr__(name: str) -> Any:
    # EagerResult, ResultSet and GroupResult build on AsyncResult: their modules import
    # this one, so this one finds them on first use.
    if name == "EagerResult":
        from . import eagerresult

        return eagerresult.EagerResult
    if name in ("GroupResult", "ResultSet"):
        from . import groupresult

        return getattr(groupresult, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
