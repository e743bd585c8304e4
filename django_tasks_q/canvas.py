"""Signatures: a task call packed as a dict, so it can travel inside messages.

Workflow primitives (chain, group, chord, map/starmap/chunks) build on it.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .result import AsyncResult
    from .task import Task


class Signature(dict):
    """``{"task", "args", "kwargs", "options", "subtask_type", "immutable"}``: Celery's dict form."""

    def __init__(
        self,
        task: str | dict | Task | None = None,
        args: Any = None,
        kwargs: dict | None = None,
        options: dict | None = None,
        subtask_type: str | None = None,
        immutable: bool = False,
        *,
        task_obj: Task | None = None,
        **ex: Any,
    ) -> None:
        if isinstance(task, dict):
            super().__init__(task)
            self.setdefault("args", [])
            self.setdefault("kwargs", {})
            self.setdefault("options", {})
            self.setdefault("subtask_type", None)
            self.setdefault("immutable", False)
            self["args"] = list(self["args"] or [])
            self._task = task_obj
            return
        name = task if isinstance(task, str) or task is None else task.name
        if task is not None and not isinstance(task, str):
            task_obj = task
        options = dict(options or {})
        options.update(ex)
        immutable = bool(options.pop("immutable", immutable))
        super().__init__(
            task=name,
            args=list(args or ()),
            kwargs=dict(kwargs or {}),
            options=options,
            subtask_type=subtask_type,
            immutable=immutable,
        )
        self._task = task_obj

    # -- accessors -----------------------------------------------------------
    @property
    def task(self) -> str:
        return self["task"]

    @property
    def args(self) -> list:
        return self["args"]

    @property
    def kwargs(self) -> dict:
        return self["kwargs"]

    @property
    def options(self) -> dict:
        return self["options"]

    @property
    def immutable(self) -> bool:
        return bool(self.get("immutable"))

    @property
    def id(self) -> str | None:
        return self.options.get("task_id")

    @property
    def type(self) -> Task:
        if self._task is None:
            from .registry import tasks

            self._task = tasks[self.task]
        return self._task

    # -- building ---------------------------------------------------------------
    def clone(self, args: Any = None, kwargs: dict | None = None, **opts: Any) -> Signature:
        """A copy with partial args prepended and kwargs/options merged (unless immutable)."""
        sig = signature_from_dict(copy.deepcopy(dict(self)), task_obj=self._task)
        if not sig.immutable:
            if args:
                sig["args"] = list(args) + list(sig.args)
            if kwargs:
                sig["kwargs"] = {**sig.kwargs, **kwargs}
        if opts:
            sig["options"] = {**sig.options, **opts}
        return sig

    partial = clone

    def set(self, immutable: bool | None = None, **options: Any) -> Signature:
        if immutable is not None:
            self["immutable"] = immutable
        self.options.update(options)
        return self

    def set_immutable(self, immutable: bool) -> None:
        self["immutable"] = immutable

    def link(self, callback: Signature) -> Signature:
        self.options.setdefault("link", []).append(callback)
        return callback

    def link_error(self, errback: Signature) -> Signature:
        self.options.setdefault("link_error", []).append(errback)
        return errback

    def freeze(self, _id: str | None = None, **kwargs: Any) -> AsyncResult:
        from .message import new_id
        from .result import AsyncResult

        task_id = self.options.setdefault("task_id", _id or new_id())
        return AsyncResult(task_id, task_name=self.task)

    # -- calling --------------------------------------------------------------------
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run inline in this process, like calling the task function."""
        sig = self.clone(args, kwargs)
        return sig.type(*sig.args, **sig.kwargs)

    def delay(self, *args: Any, **kwargs: Any) -> AsyncResult:
        return self.apply_async(args, kwargs)

    def apply_async(self, args: Any = None, kwargs: dict | None = None, **options: Any) -> AsyncResult:
        from .calling import send_task

        sig = self.clone(args, kwargs, **options) if (args or kwargs or options) else self
        opts = {k: v for k, v in sig.options.items() if k not in ("immutable",)}
        opts.pop("subtask_type", None)
        if self._task is not None or _registered(sig.task):
            return sig.type.apply_async(sig.args, sig.kwargs, **opts)
        return send_task(sig.task, sig.args, sig.kwargs, **opts)

    def apply(self, args: Any = None, kwargs: dict | None = None, **options: Any) -> Any:
        sig = self.clone(args, kwargs, **options)
        opts = {k: v for k, v in sig.options.items() if k in ("task_id", "link", "link_error")}
        return sig.type.apply(sig.args, sig.kwargs, **opts)

    def __or__(self, other: Any) -> Any:
        from .workflows import chain

        return chain(self, other)

    def __repr__(self) -> str:
        args = ", ".join([repr(a) for a in self.args] + [f"{k}={v!r}" for k, v in self.kwargs.items()])
        return f"{self.task}({args}){'!' if self.immutable else ''}"

    def __deepcopy__(self, memo: dict) -> Signature:
        return signature_from_dict(copy.deepcopy(dict(self), memo), task_obj=self._task)

    def __reduce__(self):
        return signature_from_dict, (dict(self),)


def _registered(name: str) -> bool:
    from .registry import tasks

    return name in tasks


def signature_from_dict(d: dict, task_obj: Task | None = None) -> Signature:
    """Rebuild the right Signature subclass from its dict form (``subtask_type``)."""
    if isinstance(d, Signature):
        return d
    kind = d.get("subtask_type")
    if kind:
        from .workflows import SIGNATURE_TYPES

        cls = SIGNATURE_TYPES.get(kind)
        if cls is not None:
            return cls.from_dict(d)
    return Signature(dict(d), task_obj=task_obj)


def signature(varies: Any, *args: Any, **kwargs: Any) -> Signature:
    """``signature('proj.tasks.add', args=(2, 2))`` or ``signature(a_dict)``."""
    if isinstance(varies, dict) and not args and not kwargs:
        return signature_from_dict(varies)
    return Signature(varies, *args, **kwargs)


subtask = signature


def maybe_signature(d: Any) -> Signature | None:
    if d is None:
        return None
    return signature_from_dict(d) if isinstance(d, dict) else d


def xmap(sig: Signature, it: Any) -> Any:
    from .workflows import xmap as _xmap

    return _xmap(sig, it)


def xstarmap(sig: Signature, it: Any) -> Any:
    from .workflows import xstarmap as _xstarmap

    return _xstarmap(sig, it)


def chunks(sig: Signature, it: Any, n: int) -> Any:
    from .workflows import chunks as _chunks

    return _chunks(sig, it, n)
