"""``@task``: turn a function (or a ``Task`` subclass) into a registered task.

Options are checked when the decorator runs, so a wrong one fails at import.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, overload

from .task_options import TASK_OPTIONS, did_you_mean

if TYPE_CHECKING:
    from .task import Task

P = ParamSpec("P")
R = TypeVar("R")


@overload
def task(fun: Callable[P, R], /) -> Task[P, R]: ...


@overload
def task(
    *, name: str | None = None, bind: bool = False, base: type[Task] | None = None, **options: Any
) -> Callable[[Callable[P, R]], Task[P, R]]: ...


def task(
    fun: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    bind: bool = False,
    base: type[Task] | None = None,
    **options: Any,
) -> Any:
    """Turn a function into a task: ``@task`` or ``@task(name=..., bind=True, ...)``."""
    from .task import Task  # task.py imports this module

    unknown = [k for k in options if k not in TASK_OPTIONS]
    if unknown:
        hint = did_you_mean(unknown[0], TASK_OPTIONS)
        raise TypeError(f"@task got an unknown option {unknown[0]!r}.{hint}")
    base = base or Task
    if not (isinstance(base, type) and issubclass(base, Task)):
        raise TypeError(f"@task(base=...) must be a Task subclass, got {base!r}")

    def decorate(f: Callable[..., Any]) -> Task:
        if not callable(f):
            raise TypeError(f"@task decorates functions, got {f!r}")
        obj = base.__new__(base)
        obj._configure(f, name, bind, options)
        base.__init__(obj)
        _register(obj)
        return obj

    if fun is not None:
        return decorate(fun)
    return decorate


def register_task_class(cls: type[Task]) -> Task:
    """Register a class-based task (a Task subclass defining run())."""
    obj = cls.__new__(cls)
    obj._configure(None, cls.name or None, False, {})
    cls.__init__(obj)
    _register(obj)
    return obj


def _register(obj: Task) -> None:
    from .registry import tasks

    tasks.register(obj)
