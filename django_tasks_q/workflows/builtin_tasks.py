"""Tasks the workflows send: ``tasks_q.map``, ``tasks_q.starmap``, ``tasks_q.chunks``,
``tasks_q.identity``. Registered by :mod:`django_tasks_q.builtins`."""

from __future__ import annotations

from typing import Any

from ..canvas import signature_from_dict
from ..task import task


def _call(sig: Any, args: list[Any]) -> Any:
    fun = sig.type
    if sig.immutable:
        return fun(*sig.args, **sig.kwargs)
    return fun(*args, *sig.args, **sig.kwargs)


@task(name="tasks_q.map")
def xmap(task: dict, it: list) -> list:
    """``[task(item) for item in it]``, in this worker."""
    sig = signature_from_dict(task)
    return [_call(sig, [item]) for item in it]


@task(name="tasks_q.starmap")
def xstarmap(task: dict, it: list) -> list:
    """``[task(*item) for item in it]``, in this worker."""
    sig = signature_from_dict(task)
    return [_call(sig, list(item)) for item in it]


@task(name="tasks_q.chunks")
def chunks(task: dict, it: list, n: int) -> str:
    """Apply ``chunks(task, it, n)`` as a group; return the (saved) group id."""
    from .maps import chunks as chunks_sig

    result = chunks_sig(signature_from_dict(task), it, n).apply_async()
    result.save()
    return result.id


@task(name="tasks_q.identity")
def identity(value: Any) -> Any:
    """Return ``value``: the body that collects a nested group's results in a chord."""
    return value
