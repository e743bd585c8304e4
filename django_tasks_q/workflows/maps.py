"""``task.map(it)``, ``task.starmap(it)`` and ``task.chunks(it, n)``.

``map``/``starmap`` are one message: one task (``tasks_q.map``/``tasks_q.starmap``)
calls the function on every item, in the worker, and returns the list. ``chunks``
splits the items into groups of ``n`` and runs each as a ``starmap``, in parallel.
"""

from __future__ import annotations

from itertools import islice
from typing import Any

from ..canvas import Signature, signature_from_dict
from .base import as_signature


class _basemap(Signature):  # noqa: N801
    _task_name = "tasks_q.map"
    _subtask_type = "xmap"

    def __init__(self, task: Any, it: Any, **options: Any) -> None:
        sig = as_signature(task, f"{type(self).__name__}()")
        options.pop("immutable", None)
        Signature.__init__(
            self,
            self._task_name,
            (),
            {"task": sig, "it": [list(i) if isinstance(i, tuple) else i for i in it]},
            options=options,
            subtask_type=self._subtask_type,
            immutable=True,
        )

    @classmethod
    def from_dict(cls, d: dict, task_obj: Any = None) -> _basemap:
        kwargs = d.get("kwargs") or {}
        return cls(
            signature_from_dict(kwargs["task"]),
            kwargs.get("it") or [],
            **dict(d.get("options") or {}),
        )

    def __repr__(self) -> str:
        task = self.kwargs["task"]
        return f"[{task.task}(x) for x in {self.kwargs['it']!r}]"


class xmap(_basemap):  # noqa: N801 - Celery's name
    """``add.map(items)``: one task returning ``[add(x) for x in items]``."""

    _task_name = "tasks_q.map"
    _subtask_type = "xmap"


class xstarmap(_basemap):  # noqa: N801 - Celery's name
    """``add.starmap(pairs)``: one task returning ``[add(*p) for p in pairs]``."""

    _task_name = "tasks_q.starmap"
    _subtask_type = "xstarmap"

    def __repr__(self) -> str:
        task = self.kwargs["task"]
        return f"[{task.task}(*x) for x in {self.kwargs['it']!r}]"


def split(items: list[Any], n: int) -> list[list[Any]]:
    it = iter(items)
    parts = []
    while part := list(islice(it, n)):
        parts.append(part)
    return parts


class chunks(Signature):  # noqa: N801 - Celery's name
    """``add.chunks(pairs, 10)``: a group of starmaps over 10 pairs each."""

    def __init__(self, task: Any, it: Any, n: int, **options: Any) -> None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"chunks() needs a chunk size n >= 1, got {n!r}.")
        sig = as_signature(task, "chunks()")
        Signature.__init__(
            self,
            "tasks_q.chunks",
            (),
            {"task": sig, "it": [list(i) if isinstance(i, tuple) else i for i in it], "n": n},
            options=options,
            subtask_type="chunks",
            immutable=True,
        )

    @classmethod
    def from_dict(cls, d: dict, task_obj: Any = None) -> chunks:
        kwargs = d.get("kwargs") or {}
        return cls(
            signature_from_dict(kwargs["task"]), kwargs.get("it") or [], kwargs.get("n") or 1,
            **dict(d.get("options") or {}),
        )  # fmt: skip

    def group(self) -> Any:
        """The group of ``xstarmap`` signatures this stands for."""
        from .groups import group

        task, n = self.kwargs["task"], self.kwargs["n"]
        options = {k: v for k, v in self.options.items() if k != "task_id"}
        members = [xstarmap(task, part, **options) for part in split(self.kwargs["it"], n)]
        gid = self.options.get("task_id")
        return group(members, **({"task_id": gid} if gid else {}))

    def __call__(self, **options: Any) -> Any:
        return self.apply_async(**options)

    def apply_async(self, args: Any = None, kwargs: dict | None = None, **options: Any) -> Any:
        return self.group().apply_async(**options)

    def apply(self, args: Any = None, kwargs: dict | None = None, **options: Any) -> Any:
        return self.group().apply(**options)

    def __repr__(self) -> str:
        return (
            f"chunks({self.kwargs['task']!r}, {len(self.kwargs['it'])} items, n={self.kwargs['n']})"
        )
