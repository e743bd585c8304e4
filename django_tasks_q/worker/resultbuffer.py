"""Result writes buffered for a few milliseconds and written in bulk (DESIGN D5).

The tracer (``execution.execute``) is handed a :class:`ResultBuffer` as its
store. Final states are collected and written with one ``store_many`` call; the
messages of those tasks become ackable only once that call returned, so a crash
before the write leaves them unacked and the broker redelivers them.

Anything else the tracer asks of the store (chord counters, reads) first writes
what is buffered, then goes to the real store: a chord body never looks for a
result still in memory. ``STARTED`` is written at once, so a long task shows as
started while it runs.

With the ``django-db`` store the writes run on the worker's own connection
(``messaging/database_conn.py``), which the per-task ``close_old_connections``
does not close; :meth:`ResultBuffer.settle` lets the caller ack the batch in the
same transaction as its results when the broker is ``django://`` on that database.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from .. import states
from ..exceptions import TaskRevokedError
from ..results import StoreItem

logger = logging.getLogger("django_tasks_q.worker")


class ResultBuffer:
    """A store-shaped front for the tracer; ``flush()`` writes and returns ackable jobs."""

    def __init__(self, store: Any, max_items: int = 200, max_age: float = 0.002) -> None:
        self.store = store
        #: the database alias the store writes to (``django-db``), else None
        self.alias: str | None = getattr(store, "database_alias", lambda: None)()
        self.max_items = max_items
        self.max_age = max_age
        self._items: list[StoreItem] = []
        self._jobs: list[Any] = []  # jobs whose writes are in _items
        self._oldest = 0.0
        self._lock = threading.RLock()

    # -- the store interface the tracer uses ----------------------------------------------
    def _add(self, item: StoreItem) -> None:
        with self._lock:
            if not self._items:
                self._oldest = time.monotonic()
            self._items.append(item)

    def mark_as_started(self, task_id: str, request: Any = None) -> None:
        self.store.mark_as_started(task_id, request=request)

    def mark_as_done(self, task_id: str, result: Any, request: Any = None) -> None:
        if getattr(request, "ignore_result", False):
            return
        self._add(StoreItem(task_id, result, states.SUCCESS, None, request))

    def mark_as_failure(
        self, task_id: str, exc: BaseException, traceback: str | None = None, request: Any = None
    ) -> None:
        self._add(StoreItem(task_id, exc, states.FAILURE, traceback, request))

    def mark_as_retry(
        self, task_id: str, exc: BaseException, traceback: str | None = None, request: Any = None
    ) -> None:
        if getattr(request, "ignore_result", False):
            return
        self._add(StoreItem(task_id, exc, states.RETRY, traceback, request))

    def mark_as_revoked(self, task_id: str, reason: str = "revoked", request: Any = None) -> None:
        self._add(StoreItem(task_id, TaskRevokedError(reason), states.REVOKED, None, request))

    def __getattr__(self, name: str) -> Any:
        # chord_part_done, get_task_meta, update_state...: write first, then delegate
        self.write()
        return getattr(self.store, name)

    # -- the worker's side ----------------------------------------------------------------
    def job_done(self, job: Any) -> None:
        """``job``'s writes (if any) are buffered; ack it after the next write."""
        with self._lock:
            if not self._items:
                self._oldest = time.monotonic()
            self._jobs.append(job)

    def __len__(self) -> int:
        return len(self._jobs)

    def due(self) -> bool:
        """True when the buffer is old or large enough to write now."""
        return bool(self._jobs) and (
            len(self._jobs) >= self.max_items or time.monotonic() - self._oldest >= self.max_age
        )

    def write(self) -> None:
        """Write buffered results; their jobs become ackable (see :meth:`take_ackable`)."""
        from ..messaging.database_conn import own_connection

        with self._lock:
            items, self._items = self._items, []
            if not items:
                return
            try:
                if self.alias is None:
                    self.store.store_many(items)
                else:
                    with own_connection(self.alias):
                        self.store.store_many(items)
            except Exception:
                self._items = items + self._items  # keep them: the next write retries
                raise

    def take_ackable(self) -> list[Any]:
        """Write what is buffered, and return the jobs whose messages may now be acked."""
        with self._lock:
            self.write()
            jobs, self._jobs = self._jobs, []
            return jobs

    @contextmanager
    def settle(self, atomic_with: str | None = None) -> Iterator[list[Any]]:
        """Write what is buffered, then yield the jobs whose messages may now be acked.

        ``atomic_with``: a database alias; the writes and the caller's block (its
        acks) then run in one transaction there. When the write or the block
        raises, the results and jobs stay buffered for the next call.
        """
        from django.db import transaction

        from ..messaging.database_conn import own_connection

        with self._lock:
            items, jobs = self._items, self._jobs
            self._items, self._jobs = [], []
            try:
                with ExitStack() as stack:
                    for alias in dict.fromkeys(a for a in (self.alias, atomic_with) if a):
                        stack.enter_context(own_connection(alias))
                    if atomic_with is not None:
                        stack.enter_context(transaction.atomic(using=atomic_with))
                    if items:
                        self.store.store_many(items)
                    yield jobs
            except BaseException:
                self._items = items + self._items  # the next call writes (and acks) them again
                self._jobs = jobs + self._jobs
                raise
