"""Helpers every workflow primitive shares: input checks, terminal options, lineage."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, Self

from .. import _state, states
from ..canvas import Signature, signature_from_dict

#: options that belong to the task whose completion completes a workflow
TERMINAL_OPTIONS = ("task_id", "group_id", "group_index", "chord")
#: lineage options: they go to the first task(s) that run
LINEAGE_OPTIONS = ("parent_id", "root_id")


def is_eager() -> bool:
    from ..conf import settings

    return bool(settings.ALWAYS_EAGER)


def as_signature(obj: Any, where: str) -> Signature:
    """``obj`` as a Signature; a clear TypeError for anything that is not one."""
    if isinstance(obj, Signature):
        return obj
    if isinstance(obj, dict):
        return signature_from_dict(obj)
    name = getattr(obj, "name", None)
    if name is not None and callable(obj):
        raise TypeError(
            f"{where} got the task {name!r} itself; pass a signature instead: "
            f"{getattr(obj, '__name__', 'task')}.s(...) (or .si(...) to ignore the parent's result)."
        )
    raise TypeError(
        f"{where} takes signatures (task.s(...), chains, groups, chords), got "
        f"{type(obj).__name__}: {obj!r}"
    )


def as_signatures(tasks: Iterable[Any], where: str) -> list[Signature]:
    if isinstance(tasks, str | bytes):
        raise TypeError(f"{where} takes signatures, got the string {tasks!r}")
    return [as_signature(t, where) for t in tasks]


def split_tasks_arg(tasks: tuple[Any, ...]) -> list[Any]:
    """``f(a, b, c)``, ``f([a, b, c])`` and ``f(generator)`` all mean the same members."""
    if len(tasks) == 1 and not isinstance(tasks[0], dict):
        only = tasks[0]
        if isinstance(only, str | bytes) or not hasattr(only, "__iter__"):
            return [only]
        return list(only)
    return list(tasks)


def pop_options(opts: dict[str, Any], keys: Iterable[str]) -> dict[str, Any]:
    return {k: opts.pop(k) for k in list(keys) if k in opts}


def current_root(root_id: str | None) -> str | None:
    """``root_id``, or the root of the task running in this context."""
    if root_id:
        return root_id
    current = _state.current_request.get()
    if current is not None and current.id and not current.called_directly:
        return current.root_id or current.id
    return None


def current_parent(parent_id: str | None) -> str | None:
    if parent_id:
        return parent_id
    current = _state.current_request.get()
    if current is not None and current.id and not current.called_directly:
        return current.id
    return None


# -- the structure of a workflow ---------------------------------------------------------
def kind(sig: Signature) -> str | None:
    return sig.get("subtask_type") or None


def set_terminal(sig: Signature, **opts: Any) -> Signature:
    """Give the options in ``opts`` to the task whose completion completes ``sig``.

    A chain's is its last step, a chord's its body; a group has no single one, so
    callers wrap a group in ``chord(group, identity)`` first (see :func:`single_terminal`).
    Mutates ``sig`` in place (callers work on clones).
    """
    opts = {k: v for k, v in opts.items() if v is not None}
    if not opts:
        return sig
    t = kind(sig)
    if t == "chain":
        set_terminal(sig.tasks[-1], **opts)
    elif t == "chord":
        set_terminal(sig.body, **opts)
    elif t == "group":
        if "chord" in opts:
            raise TypeError("internal: a group has no single terminal task; wrap it first")
        if "task_id" in opts:  # a group's id is its GroupResult's
            sig.options["task_id"] = opts["task_id"]
    else:
        sig.options.update(opts)
    return sig


def single_terminal(sig: Signature) -> Signature:
    """``sig`` rewritten so one task completes it: a trailing group gets an identity body."""
    from .chords import chord

    t = kind(sig)
    if t == "group":
        return chord(sig, identity_signature())
    if t == "chain" and sig.tasks:
        sig.tasks[-1] = single_terminal(sig.tasks[-1])
    elif t == "chord" and sig.body is not None:
        sig.kwargs["body"] = single_terminal(sig.body)
    return sig


def identity_signature() -> Signature:
    from .builtin_tasks import identity

    return identity.s()


def leaves(sig: Signature) -> Iterator[Signature]:
    """Every plain task signature inside ``sig`` (iteratively: chains can be long)."""
    stack = [sig]
    while stack:
        node = stack.pop()
        t = kind(node)
        if t == "chain" or t == "group":
            stack.extend(reversed(node.tasks))
        elif t == "chord":
            if node.body is not None:
                stack.append(node.body)
            stack.append(node.tasks)
        else:
            yield node


def link_parent(result: Any, parent: Any) -> None:
    """Hang ``parent`` above the earliest ancestor of ``result`` that has none."""
    if parent is None or result is None:
        return
    node, seen = result, set()
    while getattr(node, "parent", None) is not None:
        if id(node) in seen:
            raise RuntimeError("Recursive result parents")
        seen.add(id(node))
        node = node.parent
    if node is not parent:
        node.parent = parent


# -- outcomes -----------------------------------------------------------------------------
def first_failure(result: Any) -> tuple[str, BaseException] | None:
    """(task id, exception) of the first failed member of ``result`` (nested sets too)."""
    from ..groupresult import ResultSet

    stack = [result]
    while stack:
        node = stack.pop()
        if isinstance(node, ResultSet):
            stack.extend(reversed(node.results))
            continue
        if node.state in states.PROPAGATE_STATES:
            return node.id, node.get(propagate=False, disable_sync_subtasks=False)
    return None


def failed_result(result: Any, exc: BaseException, traceback: str | None = None) -> Any:
    """An eager copy of frozen ``result`` (tree) where every task failed with ``exc``."""
    from ..groupresult import GroupResult, ResultSet
    from ..result import EagerResult

    if isinstance(result, ResultSet):
        members = [failed_result(r, exc, traceback) for r in result.results]
        return GroupResult(getattr(result, "id", None), members)
    return EagerResult(result.id, exc, states.FAILURE, traceback=traceback, name=result._task_name)


def first_leaf_id(sig: Signature) -> str:
    """The task id of the first task ``sig`` runs (fixed now if it was not yet)."""
    from ..message import new_id

    first = next(leaves(sig), None)
    if first is None:  # an empty group or chord header: the workflow's own id
        return sig.options.setdefault("task_id", new_id())
    return first.options.setdefault("task_id", new_id())


def set_lineage(opts: dict[str, Any], root_id: str | None, parent_id: str | None) -> None:
    """Put the workflow's root and parent (this context's task, if any) into ``opts``."""
    if root_id:
        opts["root_id"] = root_id
    parent = current_parent(parent_id)
    if parent:
        opts["parent_id"] = parent


def as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, dict):
        return [value]
    return list(value)


class Composite(Signature):
    """What chain, group and chord share: partial arguments and calling.

    :meth:`clone` (inherited) keeps partial ``args``/``kwargs`` for the task(s) that run
    first: ``kwargs`` go to ``self.kwargs["kwargs"]``, as the workflow's own kwargs
    describe its structure.
    """

    def _add_partial(self, args: Any, kwargs: dict | None) -> None:
        if args:
            self["args"] = list(args) + list(self.args)
        if kwargs:
            self.kwargs["kwargs"] = {**(self.kwargs.get("kwargs") or {}), **kwargs}

    def partial_args(self, args: Any, kwargs: dict | None) -> tuple[list, dict]:
        """Call-time ``args``/``kwargs`` combined with the partial ones (unless immutable)."""
        own_kwargs = dict(self.kwargs.get("kwargs") or {})
        if self.immutable:
            return list(self.args), own_kwargs
        return list(args or ()) + list(self.args), {**own_kwargs, **(kwargs or {})}

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Apply the workflow (asynchronously, unless ALWAYS_EAGER) and return its result."""
        return self.apply_async(args, kwargs)

    @property
    def type(self) -> Any:
        raise TypeError(f"{type(self).__name__} is a workflow, not a task: it has no task type.")


class TaskListComposite(Composite):
    """A workflow whose kwargs hold a list of signatures, ``tasks``: chain and group."""

    if TYPE_CHECKING:  # both take their members as ``*tasks`` (or one iterable)

        def __init__(self, *tasks: Any, **options: Any) -> None: ...

    @classmethod
    def from_dict(cls, d: dict, task_obj: Any = None) -> Self:
        kwargs = dict(d.get("kwargs") or {})
        tasks = [signature_from_dict(t) for t in kwargs.pop("tasks", None) or []]
        sig = cls(tasks, **dict(d.get("options") or {}))
        sig["args"] = list(d.get("args") or [])
        sig.kwargs.update(kwargs)
        sig["immutable"] = bool(d.get("immutable"))
        return sig

    @property
    def tasks(self) -> list[Signature]:
        return self.kwargs["tasks"]


# -- transactions ---------------------------------------------------------------------------
def _database_store_alias() -> str | None:
    """The database alias of the chord counters, when results live in the database."""
    from ..conf import settings

    backend = settings.RESULT_BACKEND
    if not isinstance(backend, str):
        return None
    if backend.split("://", 1)[0].lower() not in ("django-db", "django", "db"):
        return None
    from django.db import router

    from ..models import ChordCounter

    return router.db_for_write(ChordCounter)


def shared_database() -> str | None:
    """The alias when the broker (``django://``) and the chord counters share a database.

    Then counting, reading and sending the body (or recording a chord and sending its
    members) commit together or not at all: a crash in between leaves nothing half done.
    """
    from ..conf import settings

    if not str(settings.BROKER_URL).startswith("django://"):
        return None
    alias = _database_store_alias()
    return alias if alias == settings.DATABASE_ALIAS else None


def atomic_with_broker() -> Any:
    from contextlib import nullcontext

    from django.db import transaction

    alias = shared_database()
    return transaction.atomic(using=alias) if alias else nullcontext()


def uncommitted_counter_alias() -> str | None:
    """The alias whose open transaction holds a new chord counter another broker's
    workers cannot see yet (members must then be sent on commit)."""
    if shared_database():
        return None
    alias = _database_store_alias()
    if alias is None:
        return None
    from django.db import connections

    return alias if connections[alias].in_atomic_block else None
