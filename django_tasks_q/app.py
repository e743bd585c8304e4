"""The ``app`` facade: the shape of Celery's app object, so examples keep their form.

Nothing here is configured at import; every attribute reads settings lazily.
"""

from __future__ import annotations

from typing import Any


class TasksQApp:
    """``app.task``, ``app.send_task``, ``app.AsyncResult``, ``app.tasks``, ``app.control``."""

    main = "django_tasks_q"

    @property
    def conf(self) -> Any:
        from .conf import settings

        return settings

    @property
    def tasks(self) -> Any:
        from .registry import tasks

        return tasks

    def task(self, *args: Any, **kwargs: Any) -> Any:
        from .task import task

        return task(*args, **kwargs)

    shared_task = task

    def send_task(self, name: str, args: Any = None, kwargs: Any = None, **options: Any) -> Any:
        from .calling import send_task

        return send_task(name, args, kwargs, **options)

    def AsyncResult(self, task_id: str, **kwargs: Any) -> Any:  # noqa: N802 (Celery's name)
        from .result import AsyncResult

        return AsyncResult(task_id, **kwargs)

    def GroupResult(self, group_id: str, results: Any = None) -> Any:  # noqa: N802
        from .result import GroupResult

        return GroupResult(group_id, results)

    def signature(self, *args: Any, **kwargs: Any) -> Any:
        from .canvas import signature

        return signature(*args, **kwargs)

    @property
    def control(self) -> Any:
        from .control import control

        return control

    def __repr__(self) -> str:
        return "<django_tasks_q app>"


app = TasksQApp()
