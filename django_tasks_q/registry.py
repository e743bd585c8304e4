"""The process-wide task registry and discovery of ``tasks.py`` modules."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .exceptions import DuplicateTaskName, NotRegistered

if TYPE_CHECKING:
    from .task import Task


class TaskRegistry:
    """Name -> Task. A second, different function under one name is an error."""

    def __init__(self) -> None:
        self._tasks: dict[str, Task] = {}

    def register(self, task: Task) -> None:
        existing = self._tasks.get(task.name)
        if existing is not None and existing is not task and not _same_origin(existing, task):
            raise DuplicateTaskName(
                f"Task name {task.name!r} is already registered by "
                f"{_origin(existing)}; {_origin(task)} would shadow it. Pass name='...' to "
                "@task to give one of them a unique name."
            )
        self._tasks[task.name] = task

    def unregister(self, name: str) -> None:
        self._tasks.pop(name, None)

    def __getitem__(self, name: str) -> Task:
        try:
            return self._tasks[name]
        except KeyError:
            raise NotRegistered(name) from None

    def get(self, name: str, default: Any = None) -> Any:
        return self._tasks.get(name, default)

    def __contains__(self, name: object) -> bool:
        return name in self._tasks

    def __iter__(self) -> Iterator[str]:
        return iter(self._tasks)

    def __len__(self) -> int:
        return len(self._tasks)

    def keys(self):
        return self._tasks.keys()

    def items(self):
        return self._tasks.items()

    def values(self):
        return self._tasks.values()

    def names(self, include_builtins: bool = False) -> list[str]:
        return sorted(n for n in self._tasks if include_builtins or not n.startswith("tasks_q."))


def _origin(task: Task) -> str:
    # The decorated function, or the class of a class-based task (``run`` is a
    # method of Task itself for every decorated function, so it cannot tell them apart).
    source = getattr(task, "_fun", None) or type(task)
    return f"{source.__module__}.{source.__qualname__}"


def _same_origin(a: Task, b: Task) -> bool:
    # Re-importing a module (autoreload, tests) re-registers the same function.
    return _origin(a) == _origin(b)


tasks = TaskRegistry()


def autodiscover() -> None:
    """Import ``tasks`` from every installed app (called from AppConfig.ready)."""
    from django.utils.module_loading import autodiscover_modules

    autodiscover_modules("tasks")
    from . import builtins  # noqa: F401  (registers tasks_q.* tasks)
