"""``chain``: run signatures one after another; each result is the next one's first argument.

On a worker the chain travels in the first message's ``chain`` field (protocol v2),
reversed: the worker that finishes a link pops the next one from the end and sends
it with the rest. A chain of any length therefore never recurses, and in eager
mode :meth:`chain.apply` iterates over the links.
"""

from __future__ import annotations

from typing import Any

from ..canvas import Signature, signature_from_dict
from .base import (
    LINEAGE_OPTIONS,
    TERMINAL_OPTIONS,
    TaskListComposite,
    as_list,
    as_signatures,
    current_root,
    failed_result,
    first_failure,
    first_leaf_id,
    is_eager,
    kind,
    link_parent,
    pop_options,
    set_lineage,
    set_terminal,
    single_terminal,
    split_tasks_arg,
)


def _unrollable(sig: Signature) -> bool:
    """A nested chain whose links can join the outer chain without changing anything."""
    return (
        kind(sig) == "chain"
        and not sig.args
        and not sig.kwargs.get("kwargs")
        and not sig.options
        and not sig.immutable
    )


def _spread_callbacks(steps: list[Signature], links: Any, errbacks: Any) -> None:
    """Errbacks go to every step (any may fail); callbacks to the last (the chain's value)."""
    for eb in as_list(errbacks):
        for step in steps:
            step.link_error(eb)
    for cb in as_list(links):
        steps[-1].link(cb)


class chain(TaskListComposite):  # noqa: N801 - Celery's name
    """``chain(a, b, c)`` or ``a | b | c``; ``chain(...)()`` returns the last task's result,
    whose ``.parent`` links lead back to the first."""

    def __init__(self, *tasks: Any, **options: Any) -> None:
        steps: list[Signature] = []
        for sig in as_signatures(split_tasks_arg(tasks), "chain()"):
            if _unrollable(sig):
                steps.extend(sig.tasks)
            else:
                steps.append(sig)
        Signature.__init__(
            self, "celery.chain", (), {"tasks": steps}, options=options, subtask_type="chain"
        )

    def unchain_tasks(self) -> list[Signature]:
        return [t.clone() for t in self.tasks]

    # -- preparing ----------------------------------------------------------------------
    def steps(self) -> list[Signature]:
        """The links of this chain flattened, with every group that is followed by
        another link turned into a chord (Celery's rule). Works on the signatures
        in place: callers pass a clone."""
        flat: list[Signature] = []
        stack = list(reversed(self.tasks))
        while stack:
            sig = stack.pop()
            if kind(sig) == "chain":
                inner = sig.tasks
                if inner:
                    args, kwargs = sig.partial_args((), {})
                    first = inner[0].clone(args, kwargs) if (args or kwargs) else inner[0]
                    _spread_callbacks(inner, sig.options.get("link"), sig.options.get("link_error"))
                    stack.extend(reversed([first, *inner[1:]]))
                continue
            flat.append(sig)
        from .chords import chord

        out: list[Signature] = []
        for sig in flat:
            if out and kind(out[-1]) == "group":
                out[-1] = chord(out[-1], sig)
            else:
                out.append(sig)
        self.kwargs["tasks"] = out
        return out

    def _prepare(
        self, args: Any, kwargs: dict | None, options: dict[str, Any]
    ) -> tuple[list[Signature], dict[str, Any], list[Any]]:
        """A frozen clone's steps, the options for the first step, and every step's result."""
        opts = {**self.options, **options}
        sig: chain = self.clone()  # type: ignore[assignment]
        continuation = opts.pop("chain", None)  # links that follow this chain (reversed)
        if continuation:
            sig.kwargs["tasks"] = sig.tasks + [
                signature_from_dict(d) for d in reversed(continuation)
            ]
        args, kwargs = sig.partial_args(args, kwargs)
        steps = sig.steps()
        if not steps:
            raise ValueError("This chain has no tasks to run: chain(a.s(), b.s(), ...).")
        if args or kwargs:
            steps[0] = steps[0].clone(args, kwargs)
        terminal = pop_options(opts, TERMINAL_OPTIONS)
        _spread_callbacks(steps, opts.pop("link", None), opts.pop("link_error", None))
        if terminal.get("chord"):
            steps[-1] = single_terminal(steps[-1])
        set_terminal(steps[-1], **terminal)
        lineage = pop_options(opts, LINEAGE_OPTIONS)
        root = current_root(lineage.get("root_id")) or first_leaf_id(steps[0])
        results: list[Any] = []
        for step in steps:
            result = step.freeze(root_id=root)
            link_parent(result, results[-1] if results else None)
            results.append(result)
        set_lineage(opts, root, lineage.get("parent_id"))
        return steps, opts, results

    def freeze(
        self,
        _id: str | None = None,
        group_id: str | None = None,
        chord: Any = None,
        root_id: str | None = None,
        parent_id: str | None = None,
        group_index: int | None = None,
    ) -> Any:
        """Fix every link's task id now; the result is the last link's."""
        steps = self.steps()
        if not steps:
            raise ValueError("This chain has no tasks to freeze.")
        if chord:
            steps[-1] = single_terminal(steps[-1])
        set_terminal(
            steps[-1], task_id=_id, group_id=group_id, group_index=group_index, chord=chord
        )
        root = root_id or first_leaf_id(steps[0])
        result = None
        for i, step in enumerate(steps):
            frozen = step.freeze(root_id=root, parent_id=parent_id if i == 0 else None)
            link_parent(frozen, result)
            result = frozen
        return result

    # -- calling --------------------------------------------------------------------------
    def apply_async(self, args: Any = None, kwargs: dict | None = None, **options: Any) -> Any:
        """Send the first link, carrying the others; return the last link's result."""
        if is_eager():
            return self.apply(args, kwargs, **options)
        steps, opts, results = self._prepare(args, kwargs, options)
        rest = [dict(step) for step in reversed(steps[1:])]
        steps[0].apply_async(chain=rest or None, **opts)
        return results[-1]

    def apply(self, args: Any = None, kwargs: dict | None = None, **options: Any) -> Any:
        """Run every link now, in this process, one after the other (no recursion)."""
        throw = options.pop("throw", None)
        steps, opts, frozen = self._prepare(args, kwargs, options)
        root, parent_id = opts.get("root_id"), opts.get("parent_id")
        previous: Any = None
        value: Any = None
        for i, step in enumerate(steps):
            lineage = {"root_id": root, "parent_id": previous.id if previous else parent_id}
            result = step.apply((value,) if i else (), throw=throw, **lineage)
            link_parent(result, previous)
            previous = result
            failure = first_failure(result)
            if failure is not None:
                exc = failure[1]
                for later in frozen[i + 1 :]:
                    failed = failed_result(later, exc, getattr(result, "traceback", None))
                    link_parent(failed, previous)
                    previous = failed
                break
            value = result.get(disable_sync_subtasks=False)
        return previous

    def __repr__(self) -> str:
        return " | ".join(repr(t) for t in self.tasks) if self.tasks else "chain()"
