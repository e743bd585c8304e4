"""``chord``: a group (the header) whose results, in order, go to one callback (the body).

Counting happens in the result store: :meth:`chord.apply_async` records the chord
(``chord_init``: member count, body, result ids) *before* publishing the members;
each member, when it finishes, decrements the counter once (see
:mod:`.completion`), and the one whose decrement reaches zero sends the body.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction

from ..canvas import Signature, signature_from_dict
from ..message import new_id
from .base import (
    LINEAGE_OPTIONS,
    TERMINAL_OPTIONS,
    Composite,
    as_list,
    as_signature,
    atomic_with_broker,
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
    uncommitted_counter_alias,
)


def _as_header(header: Any) -> Signature:
    from .groups import group

    if header is None:
        return group([])
    if isinstance(header, dict):
        sig = signature_from_dict(header)
        return sig if kind(sig) == "group" else group([sig])
    return group(header)


class chord(Composite):  # noqa: N801 - Celery's name
    """``chord(header, body)``: ``body`` runs once, with the header's results in order."""

    def __init__(
        self,
        header: Any = None,
        body: Any = None,
        task: str = "celery.chord",
        args: Any = None,
        kwargs: dict | None = None,
        **options: Any,
    ) -> None:
        body_sig = as_signature(body, "chord() body") if body is not None else None
        Signature.__init__(
            self,
            task,
            args or (),
            {"header": _as_header(header), "body": body_sig, "kwargs": dict(kwargs or {})},
            options=options,
            subtask_type="chord",
        )

    @classmethod
    def from_dict(cls, d: dict, task_obj: Any = None) -> chord:
        kwargs = dict(d.get("kwargs") or {})
        header = kwargs.get("header")
        if isinstance(header, list | tuple):
            header = [signature_from_dict(h) for h in header]
        body = kwargs.get("body")
        sig = cls(
            header,
            signature_from_dict(body) if body is not None else None,
            task=d.get("task") or "celery.chord",
            args=d.get("args"),
            kwargs=kwargs.get("kwargs"),
            **dict(d.get("options") or {}),
        )
        sig["immutable"] = bool(d.get("immutable"))
        return sig

    @property
    def tasks(self) -> Signature:
        """The header, as a group."""
        return self.kwargs["header"]

    header = tasks

    @property
    def body(self) -> Signature | None:
        return self.kwargs.get("body")

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
        """Fix the header's and the body's ids; the result is the body's, whose
        ``parent`` is the header's GroupResult."""
        header_result = self.tasks.freeze(root_id=root_id, parent_id=parent_id)
        if self.body is None:
            return header_result
        if chord:
            self.kwargs["body"] = single_terminal(self.body)
        body_result = self.body.freeze(
            _id, group_id=group_id, chord=chord, root_id=root_id, group_index=group_index
        )
        link_parent(body_result, header_result)
        return body_result

    def _prepare(self, args: Any, kwargs: dict | None, options: dict[str, Any]) -> dict[str, Any]:
        """A frozen clone: header members know their chord; the body knows what follows."""
        from .chains import chain

        opts = {**self.options, **options}
        sig: chord = self.clone()  # type: ignore[assignment]
        args, kwargs = sig.partial_args(args, kwargs)
        body = kwargs.pop("body", None)
        body = as_signature(body, "chord() body").clone() if body is not None else sig.body
        if body is None:
            raise ValueError(
                "This chord has no body: write chord(header, body.s()) or chord(header)(body.s())."
            )
        continuation = opts.pop("chain", None)
        if continuation:
            body = chain(body, *[signature_from_dict(d) for d in reversed(continuation)])
        terminal = pop_options(opts, TERMINAL_OPTIONS)
        for cb in as_list(opts.pop("link", None)):
            body.link(cb)
        for eb in as_list(opts.pop("link_error", None)):
            body.link_error(eb)
        if terminal.get("chord"):
            body = single_terminal(body)
        set_terminal(body, **terminal)
        sig.kwargs["body"] = body
        header = sig.tasks
        header.kwargs["tasks"] = members = [single_terminal(m) for m in header.tasks]
        lineage = pop_options(opts, LINEAGE_OPTIONS)
        root = current_root(lineage.get("root_id")) or first_leaf_id(
            members[0] if members else body
        )
        body_result = body.freeze(root_id=root)
        gid = header.options.setdefault("task_id", new_id())
        for i, member in enumerate(members):
            set_terminal(member, chord=body, group_id=gid, group_index=i, ignore_result=False)
        header_result = header.freeze(root_id=root)
        link_parent(body_result, header_result)
        set_lineage(opts, root, lineage.get("parent_id"))
        return {
            "header": header, "body": body, "args": args, "kwargs": kwargs, "opts": opts,
            "header_result": header_result, "body_result": body_result,
        }  # fmt: skip

    # -- calling --------------------------------------------------------------------------
    def __call__(self, body: Any = None, **options: Any) -> Any:
        """``chord(header, body)()`` or ``chord(header)(body)``: apply; return the body's result."""
        return self.apply_async((), {"body": body} if body is not None else {}, **options)

    def apply_async(self, args: Any = None, kwargs: dict | None = None, **options: Any) -> Any:
        """Record the chord in the result store, then send every header member."""
        if is_eager():
            return self.apply(args, kwargs, **options)
        from ..bulk import publishing_batch
        from ..results import get_store

        p = self._prepare(args, kwargs, options)
        header, body, opts = p["header"], p["body"], p["opts"]
        members = header.tasks
        if not members:
            body.apply_async(([],), root_id=opts["root_id"], parent_id=opts.get("parent_id"))
            return p["body_result"]
        result_ids = [r.id for r in p["header_result"].results]

        def send_members() -> None:
            with publishing_batch():  # one pipeline / transaction for the header
                for member in members:
                    member.apply_async(p["args"], p["kwargs"], **opts)

        with atomic_with_broker():  # counter and members commit together on django://
            get_store().chord_init(header.id, len(members), dict(body), result_ids)
            pending = uncommitted_counter_alias()
            if pending:  # other brokers' workers would not see the counter before commit
                transaction.on_commit(send_members, using=pending)
            else:
                send_members()
        return p["body_result"]

    def apply(self, args: Any = None, kwargs: dict | None = None, **options: Any) -> Any:
        """Run the header now, in this process, then the body (or fail it with ChordError)."""
        from .completion import chord_error_eager

        throw = options.pop("throw", None)
        p = self._prepare(args, kwargs, options)
        header, body, opts = p["header"], p["body"], p["opts"]
        lineage = {k: opts[k] for k in LINEAGE_OPTIONS if k in opts}
        header_result = header.apply(p["args"], p["kwargs"], throw=throw, **lineage)
        failure = first_failure(header_result)
        if failure is not None:
            exc = chord_error_eager(body, failure, header_result, opts)
            result = failed_result(p["body_result"], exc, f"ChordError: {exc}")
        else:
            values = header_result.get(disable_sync_subtasks=False)
            last = header_result.results[-1].id if header_result.results else opts.get("parent_id")
            result = body.apply((values,), throw=throw, root_id=opts["root_id"], parent_id=last)
        link_parent(result, header_result)
        return result

    def __repr__(self) -> str:
        return f"chord({self.tasks!r}, {self.body!r})"
