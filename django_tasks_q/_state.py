"""Per-process/per-context state: the task currently executing, if any."""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

#: The ``Request`` of the task running in this context (None outside tasks).
current_request: ContextVar[Any | None] = ContextVar("tasks_q_current_request", default=None)


def in_task() -> bool:
    """True while a task body runs in this context (sync waits are refused there)."""
    request = current_request.get()
    return request is not None and not getattr(request, "is_eager", False)
