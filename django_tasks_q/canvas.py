"""Signatures: a task call packed as a dict, so it can travel inside messages.

A :class:`Signature` *is* a dict in Celery's form::

    {"task": "proj.tasks.add", "args": [2], "kwargs": {}, "options": {"countdown": 10},
     "subtask_type": None, "immutable": False}

so it serialises to JSON as it is, and :func:`signature_from_dict` rebuilds it (or
the chain, group, chord, map or chunks it describes, by ``subtask_type``) on the
other side. The workflow primitives live in :mod:`django_tasks_q.workflows`.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .result import AsyncResult
    from .task import Task

#: options ``Signature.apply()`` (eager) hands on to the tracer; others are broker-only
EAGER_OPTIONS = frozenset(
    {"task_id", "link", "link_error", "parent_id", "root_id", "group_id", "group_index", "chain", "headers"}
)  # fmt: skip


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
            self["kwargs"] = dict(self["kwargs"] or {})
            self["options"] = dict(self["options"] or {})
            self._task = task_obj
            return
        if task is not None and not isinstance(task, str) and not hasattr(task, "name"):
            raise TypeError(
                f"A signature needs a task name or a task, got {task!r}. "
                "Write add.s(2, 2) or signature('proj.tasks.add', args=(2, 2))."
            )
        name = task if isinstance(task, str) or task is None else task.name
        if task is not None and not isinstance(task, str):
            task_obj = task
        if kwargs is not None and not isinstance(kwargs, dict):
            raise TypeError(f"Signature kwargs must be a dict, got {type(kwargs).__name__}.")
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

    @classmethod
    def from_dict(cls, d: dict, task_obj: Task | None = None) -> Signature:
        return cls(dict(d), task_obj=task_obj)

    # -- accessors -----------------------------------------------------------
    @property
    def task(self) -> str:
        return self["task"]

    name = task

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
    def subtask_type(self) -> str | None:
        return self.get("subtask_type")

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
        """A deep copy; partial ``args`` are prepended and ``kwargs`` merged (new ones win),
        unless the signature is immutable. Options are merged too."""
        sig = signature_from_dict(copy.deepcopy(dict(self)), task_obj=self._task)
        if not sig.immutable:
            sig._add_partial(args, kwargs)
        if opts:
            immutable = opts.pop("immutable", None)
            if immutable is not None:
                sig["immutable"] = bool(immutable)
            sig["options"] = {**sig.options, **opts}
        return sig

    partial = clone

    def _add_partial(self, args: Any, kwargs: dict | None) -> None:
        """Prepend ``args`` and merge ``kwargs`` (new ones win) into this copy's own."""
        if args:
            self["args"] = list(args) + list(self.args)
        if kwargs:
            self["kwargs"] = {**self.kwargs, **kwargs}

    def set(self, immutable: bool | None = None, **options: Any) -> Signature:
        """Set options in place (``queue``, ``countdown``...); returns the signature."""
        if immutable is not None:
            self["immutable"] = bool(immutable)
        self.options.update(options)
        return self

    def set_immutable(self, immutable: bool) -> None:
        self["immutable"] = bool(immutable)

    def _add_to_list_option(self, key: str, value: Any) -> Any:
        if not isinstance(value, dict):
            raise TypeError(
                f"{key}= takes a signature, got {value!r}. Write {key}=task.s() (or .si())."
            )
        items = self.options.get(key)
        if items is None or isinstance(items, dict):
            items = [items] if items is not None else []
        else:
            items = list(items)
        if value not in items:
            items.append(value)
        self.options[key] = items
        return value

    def link(self, callback: Signature) -> Signature:
        """Call ``callback`` with this task's return value when it succeeds."""
        return self._add_to_list_option("link", callback)

    def link_error(self, errback: Signature) -> Signature:
        """Call ``errback`` when this task fails (see :func:`callbacks.call_errback`)."""
        return self._add_to_list_option("link_error", errback)

    on_error = link_error

    def freeze(
        self,
        _id: str | None = None,
        group_id: str | None = None,
        chord: Any = None,
        root_id: str | None = None,
        parent_id: str | None = None,
        group_index: int | None = None,
    ) -> AsyncResult:
        """Fix the task id now (kept if already set) and return its AsyncResult."""
        from .message import new_id
        from .result import AsyncResult

        opts = self.options
        task_id = opts.get("task_id") or _id or new_id()
        opts["task_id"] = task_id
        if root_id:
            opts["root_id"] = root_id
        if parent_id:
            opts["parent_id"] = parent_id
        if group_id and "group_id" not in opts:
            opts["group_id"] = group_id
        if chord:
            opts["chord"] = chord
        if group_index is not None:
            opts["group_index"] = group_index
        return AsyncResult(task_id, task_name=self.task)

    # -- calling --------------------------------------------------------------------
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run inline in this process, like calling the task function."""
        sig = self.clone(args, kwargs)
        return sig.type(*sig.args, **sig.kwargs)

    def delay(self, *args: Any, **kwargs: Any) -> Any:
        """``apply_async`` with star arguments (prepended/merged to the partial ones)."""
        return self.apply_async(args, kwargs)

    def apply_async(self, args: Any = None, kwargs: dict | None = None, **options: Any) -> Any:
        """Enqueue the call; extra ``args``/``kwargs``/options complete the signature."""
        from .calling import send_task

        sig = self.clone(args, kwargs, **options) if (args or kwargs or options) else self
        opts = {k: v for k, v in sig.options.items() if k not in ("immutable", "subtask_type")}
        if sig._task is not None or _registered(sig.task):
            return sig.type.apply_async(sig.args, sig.kwargs, **opts)
        return send_task(sig.task, sig.args, sig.kwargs, **opts)

    def apply(self, args: Any = None, kwargs: dict | None = None, **options: Any) -> Any:
        """Run now, in this process, through the tracer; returns an EagerResult."""
        throw = options.pop("throw", None)
        sig = self.clone(args, kwargs, **options)
        opts = {k: v for k, v in sig.options.items() if k in EAGER_OPTIONS and v is not None}
        return sig.type.apply(sig.args, sig.kwargs, throw=throw, **opts)

    def __invert__(self) -> Any:
        """``~sig``: apply and wait for the value."""
        return self.apply_async().get()

    def __or__(self, other: Any) -> Any:
        from .workflows import compose

        return compose(self, other)

    def __ior__(self, other: Any) -> Any:  # dict's in-place merge would be wrong here
        return self.__or__(other)

    def __ror__(self, other: Any) -> Any:
        raise TypeError(
            f"Cannot chain {type(other).__name__} with a signature: both sides of '|' must "
            "be signatures (task.s(...)), chains, groups or chords."
        )

    def __repr__(self) -> str:
        args = ", ".join(
            [repr(a) for a in self.args] + [f"{k}={v!r}" for k, v in self.kwargs.items()]
        )
        return f"{self.task}({args}){'!' if self.immutable else ''}"

    def __deepcopy__(self, memo: dict) -> Signature:
        return signature_from_dict(copy.deepcopy(dict(self), memo), task_obj=self._task)

    def __copy__(self) -> Signature:
        return signature_from_dict(dict(self), task_obj=self._task)

    def __reduce__(self) -> tuple[Any, ...]:
        return signature_from_dict, (dict(self),)


def _registered(name: str) -> bool:
    from .registry import tasks

    return name in tasks


def signature_from_dict(d: dict, task_obj: Task | None = None) -> Signature:
    """Rebuild the right Signature subclass from its dict form (``subtask_type``)."""
    if isinstance(d, Signature):
        return d
    if not isinstance(d, dict):
        raise TypeError(f"Expected a signature (a dict), got {type(d).__name__}: {d!r}")
    if "task" not in d:
        raise ValueError(f"Not a signature: the dict has no 'task' key: {d!r}")
    kind = d.get("subtask_type")
    if kind:
        from .workflows import SIGNATURE_TYPES

        cls = SIGNATURE_TYPES.get(kind)
        if cls is None:
            raise ValueError(
                f"Unknown subtask_type {kind!r} in signature {d.get('task')!r}; known: "
                f"{', '.join(sorted(SIGNATURE_TYPES))}."
            )
        return cls.from_dict(d)
    return Signature(dict(d), task_obj=task_obj)


def signature(varies: Any, *args: Any, **kwargs: Any) -> Signature:
    """``signature('proj.tasks.add', args=(2, 2))``, ``signature(add, ...)`` or ``signature(a_dict)``."""
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
