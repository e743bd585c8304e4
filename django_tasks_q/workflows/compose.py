"""The ``|`` operator: how signatures, chains, groups and chords combine (Celery's rules).

* ``task | task``, ``task | chain``, ``chain | task``: one flat chain;
* ``group | task`` (or ``| chain``, ``| group``): a chord with that body;
* ``chain ending in a group | task``: the group and the task become a chord;
* ``chord | task`` and ``chain ending in a chord | task``: the task joins the body;
* a group with one member behaves as that member; an empty group on the right is a no-op.
"""

from __future__ import annotations

from typing import Any

from ..canvas import Signature, signature_from_dict
from .base import kind


def _check(other: Any) -> Signature:
    if isinstance(other, Signature):
        return other
    if isinstance(other, dict) and "task" in other:
        return signature_from_dict(other)
    name = getattr(other, "name", None)
    hint = (
        f" Write {getattr(other, '__name__', 'task')}.s() to make one."
        if name and callable(other)
        else ""
    )
    raise TypeError(
        f"Cannot chain a signature with {type(other).__name__}: both sides of '|' must be "
        f"signatures (task.s(...)), chains, groups or chords.{hint}"
    )


def _unroll(sig: Signature) -> Signature:
    """A group of one member is that member."""
    if kind(sig) == "group" and len(sig.tasks) == 1:
        return sig.tasks[0].clone()
    return sig


def _is_empty_group(sig: Signature) -> bool:
    return kind(sig) == "group" and not sig.tasks


def compose(left: Signature, right: Any) -> Signature:
    """``left | right``."""
    from .chains import chain
    from .chords import chord

    right = _check(right)
    lk = kind(left)
    if lk == "group":
        if _is_empty_group(right):
            return left
        return chord(left, right)
    if lk == "chord":
        rk = kind(_unroll(right))
        if rk not in ("group", "chain") and left.body is not None:
            sig = left.clone()
            sig.kwargs["body"] = compose(sig.body, _unroll(right))
            return sig
        return _chain_with(chain(left), right)
    if lk == "chain":
        return _chain_with(left, right)
    rk = kind(right)
    if rk == "chain":
        return (
            chain(left, *right.tasks)
            if not right.options and not right.args
            else chain(left, right)
        )
    if _is_empty_group(right):
        return left
    return chain(left, _unroll(right))


def _chain_with(left: Signature, right: Signature) -> Signature:
    """``chain | right`` without changing ``left``."""
    from .chains import chain
    from .chords import chord

    tasks = list(left.tasks)
    rk = kind(right)
    if rk == "chain":
        result: Signature = left
        for task in right.tasks:
            result = compose(result, task)
        return result
    if _is_empty_group(right):
        return left
    if rk == "group":
        right = _unroll(right)
        if kind(right) != "group":
            return _chain_with(left, right)
        if not tasks:
            return right
        if kind(tasks[-1]) == "chord":
            last = tasks[-1].clone()
            last.kwargs["body"] = compose(last.body, right)
            return chain(*tasks[:-1], last, **left.options)
        return chain(*tasks, right, **left.options)
    if tasks and kind(tasks[-1]) == "group":
        new = chord(tasks[-1], right)
        if len(tasks) > 1 and kind(tasks[-2]) == "chord":
            prev = tasks[-2].clone()
            prev.kwargs["body"] = compose(prev.body, new)
            return chain(*tasks[:-2], prev, **left.options)
        return chain(*tasks[:-1], new, **left.options)
    if tasks and kind(tasks[-1]) == "chord" and rk != "chord":
        last = tasks[-1].clone()
        last.kwargs["body"] = compose(last.body, right)
        return chain(*tasks[:-1], last, **left.options)
    return chain(*tasks, right, **left.options)
