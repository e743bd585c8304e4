"""django-tasks-q: background jobs for Django with Celery's calling API.

Everything public is importable from here. Names are resolved lazily, so
importing this package opens no connection and reads no settings (DESIGN D11).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "task": "task",
    "shared_task": "task",
    "Task": "task",
    "app": "app",
    "AsyncResult": "result",
    "GroupResult": "result",
    "EagerResult": "result",
    "Signature": "canvas",
    "signature": "canvas",
    "subtask": "canvas",
    "maybe_signature": "canvas",
    "group": "workflows",
    "chain": "workflows",
    "chord": "workflows",
    "chunks": "workflows",
    "xmap": "workflows",
    "xstarmap": "workflows",
    "states": None,
    "exceptions": None,
    "signals": None,
    "Retry": "exceptions",
    "Reject": "exceptions",
    "Ignore": "exceptions",
    "SoftTimeLimitExceeded": "exceptions",
    "TimeLimitExceeded": "exceptions",
    "MaxRetriesExceededError": "exceptions",
    "TimeoutError": "exceptions",
    "ChordError": "exceptions",
    "get_task_logger": "log",
    "current_task": "log",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from . import exceptions, signals, states
    from .app import app
    from .canvas import Signature, maybe_signature, signature, subtask
    from .exceptions import (
        ChordError,
        Ignore,
        MaxRetriesExceededError,
        Reject,
        Retry,
        SoftTimeLimitExceeded,
        TimeLimitExceeded,
        TimeoutError,
    )
    from .log import get_task_logger
    from .result import AsyncResult, EagerResult, GroupResult
    from .task import Task, task
    from .task import task as shared_task
    from .workflows import chain, chord, chunks, group, xmap, xstarmap


def __getattr__(name: str) -> Any:
    try:
        module = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'django_tasks_q' has no attribute {name!r}") from None
    if module is None:
        return import_module(f".{name}", __name__)
    attr = "task" if name == "shared_task" else name
    value = getattr(import_module(f".{module}", __name__), attr)
    globals()[name] = value
    return value
