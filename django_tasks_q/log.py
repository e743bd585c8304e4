"""``get_task_logger``: every line carries the task's name and id."""

from __future__ import annotations

import logging
from typing import Any

from . import _state


class TaskContextFilter(logging.Filter):
    """Adds ``task_name`` and ``task_id`` to records (``???`` outside a task)."""

    def filter(self, record: logging.LogRecord) -> bool:
        request = _state.current_request.get()
        record.task_name = getattr(request, "task", None) or "???"
        record.task_id = getattr(request, "id", None) or "???"
        return True


class TaskLoggerAdapter(logging.LoggerAdapter):
    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        request = _state.current_request.get()
        if request is not None and request.id:
            return f"[{request.task}({request.id})] {msg}", kwargs
        return msg, kwargs


def get_task_logger(name: str) -> logging.LoggerAdapter:
    """A logger whose lines name the running task: ``[proj.add(<id>)] message``."""
    logger = logging.getLogger(name)
    if not any(isinstance(f, TaskContextFilter) for f in logger.filters):
        logger.addFilter(TaskContextFilter())
    return TaskLoggerAdapter(logger, {})


def current_task() -> Any:
    from .registry import tasks

    request = _state.current_request.get()
    return tasks.get(request.task) if request is not None and request.task else None
