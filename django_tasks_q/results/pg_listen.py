"""Wake result waiters on PostgreSQL ``NOTIFY`` instead of waiting out a poll interval.

The django-db store's upsert ``pg_notify``-s ``tasks_q_result`` with the task id of
every row written in a ready state. One listener thread per process and database
holds a separate autocommit psycopg connection with ``LISTEN tasks_q_result`` and
sets the :class:`threading.Event` of each waiter on that id.

Waiters never depend on it for correctness: they keep polling with backoff, and the
listener wakes everyone after each (re)connect so nothing sent before its ``LISTEN``
is missed. The connection closes after :data:`LINGER` idle seconds, so it never
holds a database open (``DROP DATABASE`` waits up to 5 s for sessions to leave).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

logger = logging.getLogger("django_tasks_q.results")

CHANNEL = "tasks_q_result"
#: seconds the connection stays open with nobody waiting
LINGER = 1.0
#: seconds between checks for idleness and stop requests
TICK = 0.25

_listeners: dict[tuple, Listener] = {}
_lock = threading.Lock()


class Listener:
    def __init__(self, params: dict[str, Any], label: str) -> None:
        self.params = params
        self.label = label
        self.pid = os.getpid()
        self._waiters: dict[str, set[threading.Event]] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    @contextmanager
    def watch(self, task_id: str) -> Iterator[threading.Event]:
        """An Event set when ``task_id`` is notified (or the listener reconnects)."""
        event = threading.Event()
        with self._lock:
            self._waiters.setdefault(task_id, set()).add(event)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name=f"tasks_q-pg-listen-{self.label}", daemon=True
                )
                self._thread.start()
        try:
            yield event
        finally:
            with self._lock:
                events = self._waiters.get(task_id)
                if events is not None:
                    events.discard(event)
                    if not events:
                        del self._waiters[task_id]

    def stop(self) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)

    def _wake_all(self) -> None:
        with self._lock:
            for events in self._waiters.values():
                for event in events:
                    event.set()

    def _wake(self, task_id: str) -> None:
        with self._lock:
            for event in self._waiters.get(task_id, ()):
                event.set()

    def _idle(self) -> bool:
        with self._lock:
            return not self._waiters

    def _run(self) -> None:
        import psycopg

        idle_since: float | None = None
        while not self._stop.is_set():
            try:
                with psycopg.connect(**self.params, autocommit=True) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self._wake_all()
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=TICK):
                            self._wake(note.payload)
                        if not self._idle():
                            idle_since = None
                        elif idle_since is None:
                            idle_since = time.monotonic()
                        elif time.monotonic() - idle_since >= LINGER:
                            with self._lock:
                                if not self._waiters:
                                    self._thread = None
                                    return
            except Exception as exc:  # waiters keep polling; retry the connection
                logger.debug("Result listener on %s failed: %s", self.label, exc)
                self._wake_all()
                if self._idle() or self._stop.wait(1.0):
                    with self._lock:
                        self._thread = None
                    return


def listener_for(connection: Any) -> Listener | None:
    """This process's listener for the database behind ``connection`` (None: unsupported)."""
    try:
        import psycopg  # noqa: F401
    except ImportError:  # psycopg2 or another driver: waiters simply poll
        return None
    settings_dict = connection.settings_dict
    key = (
        os.getpid(),
        connection.alias,
        settings_dict.get("NAME"),
        settings_dict.get("HOST"),
        settings_dict.get("PORT"),
        settings_dict.get("USER"),
    )
    with _lock:
        listener = _listeners.get(key)
        if listener is None:
            try:
                params = dict(connection.get_connection_params())
            except Exception:
                return None
            params.pop("cursor_factory", None)
            params.pop("context", None)
            listener = Listener(params, connection.alias)
            _listeners[key] = listener
        return listener


def stop_listeners() -> None:
    """Stop every listener of this process (settings reload, tests)."""
    with _lock:
        listeners = [v for k, v in _listeners.items() if k[0] == os.getpid()]
        _listeners.clear()
    for listener in listeners:
        listener.stop()
