"""Checks on control-command arguments, made before anything is sent."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal, overload


def destinations(destination: str | Iterable[str] | None) -> list[str] | None:
    """``"a@h,b@h"`` or ``["a@h"]`` -> a list of worker names; None/empty -> every worker."""
    if destination is None:
        return None
    if isinstance(destination, str):
        names = [d.strip() for d in destination.split(",")]
    else:
        names = [str(d).strip() for d in destination]
    names = [n for n in names if n]
    return names or None


@overload
def check_seconds(name: str, value: Any, allow_none: Literal[False]) -> float: ...


@overload
def check_seconds(name: str, value: Any, allow_none: bool = True) -> float | None: ...


def check_seconds(name: str, value: Any, allow_none: bool = True) -> float | None:
    """``value`` as float seconds (> 0); ValueError naming ``name`` otherwise."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ValueError(f"{name} must be a number of seconds > 0, got {value!r}")
    return float(value)


def check_task_name(name: Any) -> None:
    if not isinstance(name, str) or not name.strip():
        raise ValueError(
            f"task_name must be a task's registered name such as 'myapp.tasks.add', got {name!r}"
        )


def check_queue_name(name: Any) -> None:
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"A queue name must be a non-empty string, got {name!r}")


def check_count(n: Any) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a whole number >= 1, got {n!r}")
    return n
