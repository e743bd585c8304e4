"""Checked by mypy (tests/unit/test_task_api.py::test_public_types_check_with_mypy), never run.

Lines marked as an expected error must be reported; every other line must pass.
"""

from __future__ import annotations

from django_tasks_q import Task, task
from django_tasks_q.result import AsyncResult


@task
def add(x: int, y: int) -> int:
    return x + y


@task(name="typing.greet", queue="q")
def greet(name: str, *, punctuation: str = "!") -> str:
    return f"hello {name}{punctuation}"


t: Task[[int, int], int] = add
n: int = add(1, 2)
s: str = greet("x", punctuation="?")
r: AsyncResult = add.delay(1, 2)
r2: AsyncResult = greet.delay("x")

add("1", 2)  # expected-error
add.delay(1)  # expected-error
greet.delay(3)  # expected-error
bad: str = add(1, 2)  # expected-error
