"""The worker's own database connection: consuming, acks and result writes.

A worker closes the Django connection of its thread around every task
(``close_old_connections``, as Django does around a request), so with the
default ``CONN_MAX_AGE = 0`` every task would cost the next claim, ack or
result write a new connection (milliseconds on PostgreSQL). The bookkeeping of
``django://`` and of the ``django-db`` store therefore runs on a second,
per-thread connection that the task never sees: :func:`own_connection`
installs it as ``connections[alias]`` for the duration of a block, so the ORM
and raw statements in the block use it, and ``transaction.atomic(using=alias)``
spans them all.

That connection is kept across blocks (``CONN_MAX_AGE`` 0 is read as "keep";
a positive age is honoured), closed when it errored and is no longer usable,
or when a block left its autocommit changed, and dropped unclosed in a forked
child (the socket is the parent's).

Inside the caller's transaction the block stays on the caller's connection, so
work the caller does atomically (and tests wrapped in a transaction) sees it.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.db import connections

_local = threading.local()
_inherited: list[Any] = []  # parents' sockets, kept unclosed in a forked child
_every: weakref.WeakSet[Any] = weakref.WeakSet()  # every thread's own wrappers, for close_all_own


def _own(alias: str, current: Any) -> Any:
    owned: dict[str, Any] = _local.__dict__.setdefault("owned", {})
    wrapper = owned.get(alias)
    if wrapper is None:
        settings_dict = dict(current.settings_dict)
        if not settings_dict.get("CONN_MAX_AGE"):
            settings_dict["CONN_MAX_AGE"] = None  # persistent: a worker is no request
        wrapper = owned[alias] = type(current)(settings_dict, alias)
        _every.add(wrapper)
    return wrapper


@contextmanager
def own_connection(alias: str) -> Iterator[Any]:
    """Run the block with this thread's own persistent connection as ``connections[alias]``."""
    current = connections[alias]
    if current.in_atomic_block or getattr(current, "_tasks_q_own", False):
        yield current  # the caller's transaction, or already ours
        return
    wrapper = _own(alias, current)
    wrapper._tasks_q_own = True
    connections[alias] = wrapper
    try:
        yield wrapper
    finally:
        connections[alias] = current
        if not wrapper.in_atomic_block:
            wrapper.close_if_unusable_or_obsolete()


def close_own(alias: str | None = None) -> None:
    """Close this thread's own connection(s) (a consumer going away)."""
    owned: dict[str, Any] = _local.__dict__.get("owned", {})
    for name in [alias] if alias else list(owned):
        wrapper = owned.pop(name, None)
        if wrapper is not None and not wrapper.in_atomic_block:
            wrapper.close()


def close_all_own() -> None:
    """Close every thread's own connections (e.g. before a test run drops its database)."""
    _local.__dict__.pop("owned", None)
    for wrapper in list(_every):
        if wrapper.in_atomic_block or wrapper.connection is None:
            continue
        wrapper.inc_thread_sharing()  # it may belong to another (finished) thread
        try:
            wrapper.close()
        finally:
            wrapper.dec_thread_sharing()


def _after_fork_in_child() -> None:
    global _local, _every
    _every = weakref.WeakSet()  # the parent's: never closed from here
    for wrapper in _local.__dict__.get("owned", {}).values():
        if wrapper.connection is not None:
            _inherited.append(wrapper.connection)
            wrapper.connection = None
    _inherited.append(_local)  # other threads' wrappers too: never finalised here
    _local = threading.local()


os.register_at_fork(after_in_child=_after_fork_in_child)
