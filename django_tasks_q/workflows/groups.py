"""``group``: run signatures in parallel; the ``GroupResult`` keeps their order."""

from __future__ import annotations

from typing import Any

from ..canvas import Signature, signature_from_dict
from ..message import new_id
from .base import (
    LINEAGE_OPTIONS,
    TaskListComposite,
    as_list,
    as_signatures,
    current_root,
    first_leaf_id,
    is_eager,
    pop_options,
    set_lineage,
    split_tasks_arg,
)

LINK_MESSAGE = (
    "A group has no single task to link a callback to. Use a chord to call something "
    "once every member finished: group(...) | callback.s(), or chord(header, callback.s()). "
    "To call it after each member, link the members themselves."
)


class group(TaskListComposite):  # noqa: N801 - Celery's name
    """``group(add.s(i, i) for i in range(10))``: every member runs in parallel."""

    def __init__(self, *tasks: Any, **options: Any) -> None:
        members = split_tasks_arg(tasks)
        if (
            len(members) == 1
            and isinstance(members[0], dict)
            and members[0].get("subtask_type") == "group"
        ):
            members = list(signature_from_dict(members[0]).tasks)
        Signature.__init__(
            self,
            "celery.group",
            (),
            {"tasks": as_signatures(members, "group()")},
            options=options,
            subtask_type="group",
        )

    def link(self, callback: Signature) -> Signature:
        raise TypeError(LINK_MESSAGE)

    def link_error(self, errback: Signature) -> Signature:
        """Each member calls ``errback`` if it fails."""
        return self._add_to_list_option("link_error", errback)

    on_error = link_error

    # -- preparing ------------------------------------------------------------------------
    def freeze(
        self,
        _id: str | None = None,
        group_id: str | None = None,
        chord: Any = None,
        root_id: str | None = None,
        parent_id: str | None = None,
        group_index: int | None = None,
    ) -> Any:
        """Fix the group id and every member's task id; return the GroupResult."""
        from ..groupresult import GroupResult

        gid = self.options.get("task_id") or _id or new_id()
        self.options["task_id"] = gid
        results = [
            member.freeze(group_id=gid, group_index=i, root_id=root_id, parent_id=parent_id)
            for i, member in enumerate(self.tasks)
        ]
        return GroupResult(gid, results)

    def _prepare(
        self, args: Any, kwargs: dict | None, options: dict[str, Any]
    ) -> tuple[group, list, dict, dict[str, Any]]:
        opts = {**self.options, **options}
        if opts.pop("link", None):
            raise TypeError(LINK_MESSAGE)
        sig: group = self.clone()  # type: ignore[assignment]
        args, kwargs = sig.partial_args(args, kwargs)
        for eb in as_list(opts.pop("link_error", None)):
            for member in sig.tasks:
                member.link_error(eb)
        gid = opts.pop("task_id", None) or sig.options.get("task_id") or new_id()
        sig.options["task_id"] = gid
        opts.pop("group_id", None)
        opts.pop("group_index", None)
        lineage = pop_options(opts, LINEAGE_OPTIONS)
        root = current_root(lineage.get("root_id")) or (
            first_leaf_id(sig.tasks[0]) if sig.tasks else None
        )
        set_lineage(opts, root, lineage.get("parent_id"))
        return sig, args, kwargs, opts

    # -- calling --------------------------------------------------------------------------
    def apply_async(self, args: Any = None, kwargs: dict | None = None, **options: Any) -> Any:
        """Send every member (partial ``args`` go to each); return the GroupResult."""
        if is_eager():
            return self.apply(args, kwargs, **options)
        continuation = options.pop("chain", None)
        outer_chord = options.get("chord") or self.options.get("chord")
        if continuation or outer_chord:
            return self._as_chord(continuation).apply_async(args, kwargs, **options)
        options.pop("chord", None)
        from ..bulk import publishing_batch
        from ..groupresult import GroupResult

        sig, args, kwargs, opts = self._prepare(args, kwargs, options)
        gid = sig.options["task_id"]
        results = []
        with publishing_batch():  # the members go out in one pipeline / transaction
            for i, member in enumerate(sig.tasks):
                member.freeze(group_id=gid, group_index=i, root_id=opts.get("root_id"))
                results.append(member.apply_async(args, kwargs, **opts))
        return GroupResult(gid, results)

    def apply(self, args: Any = None, kwargs: dict | None = None, **options: Any) -> Any:
        """Run every member now, in this process, in order; return the GroupResult."""
        from ..groupresult import GroupResult

        throw = options.pop("throw", None)
        options.pop("chain", None)
        options.pop("chord", None)
        sig, args, kwargs, opts = self._prepare(args, kwargs, options)
        gid = sig.options["task_id"]
        lineage = {k: opts[k] for k in LINEAGE_OPTIONS if k in opts}
        results = [
            member.apply(args, kwargs, group_id=gid, group_index=i, throw=throw, **lineage)
            for i, member in enumerate(sig.tasks)
        ]
        return GroupResult(gid, results)

    def _as_chord(self, continuation: list[dict] | None) -> Signature:
        """This group followed by ``continuation`` (or an identity body): a chord."""
        from .base import identity_signature
        from .chains import chain
        from .chords import chord

        rest = [signature_from_dict(d) for d in reversed(continuation or [])]
        body = chain(*rest) if len(rest) > 1 else (rest[0] if rest else identity_signature())
        return chord(self.clone(), body)

    def __repr__(self) -> str:
        return f"group([{', '.join(repr(t) for t in self.tasks)}])"

    def __len__(self) -> int:  # dict's len would count the keys
        return len(self.tasks)
