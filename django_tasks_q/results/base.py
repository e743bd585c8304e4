"""The ``ResultStore`` interface and the logic every store shares.

A write goes through :meth:`ResultStore.prepare`, which turns
``(task_id, result, state, traceback, request, meta)`` into a *record*: a flat dict
with the keys of :data:`OVERWRITE_FIELDS` and :data:`COALESCE_FIELDS`, every value
JSON-encodable. Stores persist records with :meth:`ResultStore.write_records`
following two rules:

* overwrite fields (state, result, traceback, date_done) are always replaced;
  coalesce fields (name, args, lineage, meta, ...) are replaced only by a
  non-``None`` value, so a revoke written without a request keeps the task's name;
* a non-ready state never replaces a ready one (a late STARTED after SUCCESS is
  dropped), see :func:`is_downgrade`.
"""

from __future__ import annotations

import logging
import os
import time
import traceback as tb_module
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.utils import timezone

from .. import states
from ..conf import settings
from ..exceptions import EncodeError, TaskRevokedError, TimeoutError
from .codec import capped, dumps
from .errors import exception_to_dict, is_exception_dict

logger = logging.getLogger("django_tasks_q.results")

OVERWRITE_FIELDS = ("status", "result", "traceback", "date_done")
COALESCE_FIELDS = (
    "name",
    "args",
    "kwargs",
    "worker",
    "retries",
    "queue",
    "parent_id",
    "root_id",
    "group_id",
    "periodic_task_name",
    "children",
    "meta",
    "date_started",
    "date_sent",
)
META_FIELDS = ("task_id", *OVERWRITE_FIELDS, *COALESCE_FIELDS)

#: backoff of polling stores: first sleep, then doubling up to ``interval``
FIRST_POLL_DELAY = 0.005


@dataclass(slots=True)
class StoreItem:
    """One pending write for :meth:`ResultStore.store_many`."""

    task_id: str
    result: Any
    state: str
    traceback: str | None = None
    request: Any = None
    meta: Any = None


@dataclass(frozen=True, slots=True)
class ChordReady:
    """Handed to the one caller whose ``chord_part_done`` brought the counter to zero."""

    group_id: str
    body: dict
    result_ids: list[str]


def empty_meta(task_id: str) -> dict[str, Any]:
    """What an unknown task id looks like: PENDING, nothing else known."""
    meta: dict[str, Any] = dict.fromkeys(META_FIELDS)
    meta.update(task_id=task_id, status=states.PENDING, children=[], retries=0)
    return meta


def is_downgrade(current: str | None, new: str) -> bool:
    """True when writing ``new`` over ``current`` would turn a ready state non-ready."""
    return current in states.READY_STATES and new not in states.READY_STATES


def merge_records(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Fold writes for the same task id in a batch into one, applying the write rules."""
    merged: dict[str, dict[str, Any]] = {}
    for record in records:
        old = merged.get(record["task_id"])
        if old is None:
            merged[record["task_id"]] = record
            continue
        if not is_downgrade(old["status"], record["status"]):
            for key in OVERWRITE_FIELDS:
                old[key] = record[key]
            for key in COALESCE_FIELDS:
                if record[key] is not None:
                    old[key] = record[key]
    return list(merged.values())


def _child_tuple(child: Any) -> Any:
    as_tuple = getattr(child, "as_tuple", None)
    if as_tuple is not None:
        return as_tuple()
    return [[str(child), None], None]


def _queue_of(request: Any) -> str | None:
    info = getattr(request, "delivery_info", None) or {}
    if not isinstance(info, dict):
        return None
    return info.get("queue") or info.get("routing_key")


class ResultStore:
    """Where task states and results live. Subclasses implement the storage methods."""

    #: True when :meth:`wait_for` blocks on a notification rather than polling
    native_wait = False

    # -- record building -------------------------------------------------------------

    def prepare(
        self,
        task_id: str,
        result: Any,
        state: str,
        traceback: str | None = None,
        request: Any = None,
        meta: Any = None,
    ) -> dict[str, Any]:
        """Build the record for one write (see the module docstring)."""
        task_id = str(task_id)
        name = getattr(request, "task", None)
        if state in states.EXCEPTION_STATES:
            result = self.encode_exception(result, state)
        else:
            try:
                dumps(result)
            except EncodeError as err:
                label = f"{name}[{task_id}]" if name else task_id
                exc = EncodeError(f"The result of task {label} cannot be serialised as JSON: {err}")
                state, result = states.FAILURE, exception_to_dict(exc)
                traceback = "".join(tb_module.format_exception_only(type(exc), exc))
        now = timezone.now()
        extended = settings.RESULT_EXTENDED
        limit = settings.RESULT_ARGS_MAX_SIZE
        children = getattr(request, "children", None)
        retries = getattr(request, "retries", None)
        return {
            "task_id": task_id,
            "status": state,
            "result": result,
            "traceback": traceback,
            "date_done": now if state in states.READY_STATES else None,
            "name": name,
            "args": capped(getattr(request, "args", None), limit) if extended else None,
            "kwargs": capped(getattr(request, "kwargs", None), limit) if extended else None,
            "worker": getattr(request, "hostname", None),
            "retries": retries if isinstance(retries, int) else None,
            "queue": _queue_of(request),
            "parent_id": getattr(request, "parent_id", None),
            "root_id": getattr(request, "root_id", None),
            "group_id": getattr(request, "group", None),
            "periodic_task_name": getattr(request, "periodic_task_name", None),
            "children": [_child_tuple(c) for c in children] if children else None,
            "meta": capped(meta, None),
            "date_started": now if state == states.STARTED else None,
            "date_sent": getattr(request, "date_sent", None),
        }

    @staticmethod
    def encode_exception(exc: Any, state: str) -> Any:
        if isinstance(exc, BaseException):
            return exception_to_dict(exc)
        if exc is None or is_exception_dict(exc):
            return exc
        if state == states.REVOKED:
            return exception_to_dict(TaskRevokedError(str(exc)))
        return exception_to_dict(Exception(capped(exc, None)))

    # -- writes ----------------------------------------------------------------------

    def write_records(self, records: list[dict[str, Any]]) -> None:
        """Persist prepared records (already merged: one per task id)."""
        raise NotImplementedError

    def store_result(
        self,
        task_id: str,
        result: Any,
        state: str,
        traceback: str | None = None,
        request: Any = None,
        meta: Any = None,
    ) -> None:
        self.write_records([self.prepare(task_id, result, state, traceback, request, meta)])

    def store_many(self, items: list[StoreItem]) -> None:
        """Write many results in as few round trips as the store allows."""
        if not items:
            return
        records = (
            self.prepare(i.task_id, i.result, i.state, i.traceback, i.request, i.meta)
            for i in items
        )
        self.write_records(merge_records(records))

    def mark_as_started(self, task_id: str, request: Any = None) -> None:
        if getattr(request, "ignore_result", False):
            return
        info = {"pid": os.getpid(), "hostname": getattr(request, "hostname", None)}
        self.store_result(task_id, info, states.STARTED, request=request)

    def mark_as_done(self, task_id: str, result: Any, request: Any = None) -> None:
        if getattr(request, "ignore_result", False):
            return
        self.store_result(task_id, result, states.SUCCESS, request=request)

    def mark_as_failure(
        self, task_id: str, exc: BaseException, traceback: str | None = None, request: Any = None
    ) -> None:
        self.store_result(task_id, exc, states.FAILURE, traceback, request)

    def mark_as_retry(
        self, task_id: str, exc: BaseException, traceback: str | None = None, request: Any = None
    ) -> None:
        if getattr(request, "ignore_result", False):
            return
        self.store_result(task_id, exc, states.RETRY, traceback, request)

    def mark_as_revoked(self, task_id: str, reason: str = "revoked", request: Any = None) -> None:
        self.store_result(task_id, TaskRevokedError(reason), states.REVOKED, request=request)

    def update_state(self, task_id: str, state: str, meta: Any = None, request: Any = None) -> None:
        """Store a custom state (``PROGRESS``...): ``meta`` becomes both result and meta.

        Raises :class:`EncodeError` when ``meta`` is not JSON-serialisable, so the task
        that called it learns at once.
        """
        if state not in states.EXCEPTION_STATES:
            try:
                dumps(meta)
            except EncodeError as err:
                raise EncodeError(
                    f"update_state(state={state!r}) for task {task_id}: meta cannot be "
                    f"serialised as JSON ({err}). Pass plain dicts, lists, strings and numbers."
                ) from None
        self.store_result(task_id, meta, state, request=request, meta=meta)

    # -- reads -----------------------------------------------------------------------

    def get_task_meta(self, task_id: str) -> dict[str, Any]:
        raise NotImplementedError

    def get_many_meta(self, task_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """Metas of many tasks at once, keyed by id (stores override with one round trip)."""
        return {tid: self.get_task_meta(tid) for tid in task_ids}

    def wait_for(
        self,
        task_id: str,
        timeout: float | None = None,
        interval: float = 0.5,
        on_message: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Block until the task is ready and return its meta; polls with backoff here."""
        return wait_until_ready(
            task_id, lambda: self.get_task_meta(task_id), Backoff(interval), timeout, on_message
        )

    def forget(self, task_id: str) -> None:
        raise NotImplementedError

    # -- groups and chords -----------------------------------------------------------

    def save_group(self, group_id: str, result_ids: list[str]) -> None:
        raise NotImplementedError

    def restore_group(self, group_id: str) -> list[str] | None:
        raise NotImplementedError

    def delete_group(self, group_id: str) -> None:
        raise NotImplementedError

    def chord_init(self, group_id: str, total: int, body: dict, result_ids: list[str]) -> None:
        raise NotImplementedError

    def chord_part_done(self, group_id: str, member_id: str | None = None) -> ChordReady | None:
        """Count one finished header member; the call that reaches zero gets ChordReady.

        With ``member_id`` (the member's task id) the count is idempotent: a member
        counted once (then redelivered after a crash, say) is not counted again.
        """
        raise NotImplementedError

    # -- expiry ----------------------------------------------------------------------

    def cleanup(self, expires: timedelta | None = None, chunk_size: int = 1000) -> int:
        return 0

    @staticmethod
    def expiry(expires: timedelta | float | None = None) -> timedelta | None:
        """``expires`` or ``RESULT_EXPIRES`` as a timedelta; None keeps results forever."""
        if expires is None:
            expires = settings.RESULT_EXPIRES
        if expires is None:
            return None
        if isinstance(expires, timedelta):
            return expires
        return timedelta(seconds=float(expires))


def wait_until_ready(
    task_id: str,
    read: Callable[[], dict[str, Any]],
    pause: Callable[[float | None], Any],
    timeout: float | None,
    on_message: Callable[[dict[str, Any]], None] | None,
) -> dict[str, Any]:
    """The loop of every store's ``wait_for``: ``read()`` the meta until it is ready.

    In between, ``pause(seconds_left)`` waits (``None``: no deadline); it may return
    early, woken by a notification. TimeoutError once ``timeout`` seconds have passed.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    seen: tuple[Any, ...] | None = None
    while True:
        meta = read()
        if on_message is not None:
            seen = notify_if_changed(meta, seen, on_message)
        if meta["status"] in states.READY_STATES:
            return meta
        pause(wait_budget(deadline, task_id, timeout, meta))


class Backoff:
    """A ``pause`` for polling: :data:`FIRST_POLL_DELAY`, doubling up to ``interval``,
    never past the deadline. ``sleep`` may be an event's ``wait``."""

    def __init__(self, interval: float, sleep: Callable[[float], Any] | None = None) -> None:
        self.delay = FIRST_POLL_DELAY
        self.cap = max(interval, FIRST_POLL_DELAY)
        self.sleep = sleep or time.sleep

    def __call__(self, remaining: float | None) -> None:
        self.sleep(self.delay if remaining is None else min(self.delay, remaining))
        self.delay = min(self.delay * 2, self.cap)


def wait_budget(
    deadline: float | None, task_id: str, timeout: float | None, meta: dict[str, Any]
) -> float | None:
    """Seconds left before ``deadline``; raise TimeoutError when none are."""
    if deadline is None:
        return None
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError(
            f"Timed out after {timeout}s waiting for task {task_id} (state {meta['status']})."
        )
    return remaining


def notify_if_changed(
    meta: dict[str, Any], seen: tuple[Any, ...] | None, on_message: Callable[[dict], None]
) -> tuple[Any, ...]:
    """Call ``on_message(meta)`` when state, result or meta differ from ``seen``."""
    key = (meta["status"], dumps(meta["result"]), dumps(meta.get("meta")))
    if key != seen:
        on_message(meta)
    return key


def missing_chord(group_id: str) -> None:
    """Log a decrement of a chord counter that does not exist; there is nothing to fire."""
    logger.warning(
        "Chord %s has no counter (never initialised, or expired and cleaned up); "
        "its body will not run.",
        group_id,
    )
    return None
