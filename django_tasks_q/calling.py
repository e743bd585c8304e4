"""From a call to a published message: routing, lineage, encoding, publishing."""

from __future__ import annotations

import os
import socket
from datetime import datetime
from typing import TYPE_CHECKING, Any

from . import _state
from .bulk import current_batch
from .conf import settings
from .exceptions import EncodeError
from .message import Message, new_id
from .messaging import producer
from .routing import route_for
from .signals import task_sent
from .task_options import eta_from, expires_from

if TYPE_CHECKING:
    from .request import Request
    from .result import AsyncResult
    from .task import Task


_origin_cache: tuple[int, str] | None = None


def _origin() -> str:
    """``gen<pid>@<host>``: the sender's node name, as Celery's producers put it."""
    global _origin_cache
    pid = os.getpid()
    if _origin_cache is None or _origin_cache[0] != pid:
        _origin_cache = (pid, f"gen{pid}@{socket.gethostname()}")
    return _origin_cache[1]


def _sig_dicts(value: Any) -> list[dict] | None:
    if value is None:
        return None
    items = value if isinstance(value, list | tuple) else [value]
    return [dict(s) for s in items]


def build_message(
    name: str,
    args: list,
    kwargs: dict,
    *,
    task: Task | None = None,
    task_id: str | None = None,
    countdown: float | None = None,
    eta: datetime | None = None,
    expires: Any = None,
    headers: dict[str, Any] | None = None,
    link: Any = None,
    link_error: Any = None,
    ignore_result: bool | None = None,
    shadow: str | None = None,
    group_id: str | None = None,
    group_index: int | None = None,
    parent_id: str | None = None,
    root_id: str | None = None,
    chain: list | None = None,
    chord: Any = None,
    time_limit: float | None = None,
    soft_time_limit: float | None = None,
    reply_to: str | None = None,
    correlation_id: str | None = None,
    priority: int | None = None,
    periodic_task_name: str | None = None,
    retries: int = 0,
    argsrepr: str | None = None,
    kwargsrepr: str | None = None,
) -> Message:
    current = _state.current_request.get()
    if current is not None and current.id and not current.called_directly:
        parent_id = parent_id or current.id
        root_id = root_id or current.root_id or current.id
    if task is not None:
        if ignore_result is None:
            ignore_result = task.effective_ignore_result
        if expires is None:
            expires = task.expires
        if time_limit is None:
            time_limit = task.time_limit
        if soft_time_limit is None:
            soft_time_limit = task.soft_time_limit
    elif ignore_result is None:
        ignore_result = settings.IGNORE_RESULT
    extra = dict(headers) if headers else {}
    if periodic_task_name:
        extra["periodic_task_name"] = periodic_task_name
    task_id = task_id or new_id()
    return Message(
        task=name,
        id=task_id,
        args=list(args),
        kwargs=dict(kwargs),
        callbacks=_sig_dicts(link),
        errbacks=_sig_dicts(link_error),
        chain=[dict(s) for s in chain] if chain else None,
        chord=dict(chord) if chord is not None else None,
        root_id=root_id or task_id,
        parent_id=parent_id,
        group=group_id,
        group_index=group_index,
        shadow=shadow,
        eta=eta_from(countdown, eta) if countdown is not None or eta is not None else None,
        expires=expires_from(expires) if expires is not None else None,
        retries=retries,
        timelimit=(time_limit, soft_time_limit),  # Celery's order: [hard, soft]
        origin=_origin(),
        ignore_result=bool(ignore_result),
        reply_to=reply_to,
        correlation_id=correlation_id,
        priority=priority,
        extra_headers=extra,
        argsrepr=argsrepr,
        kwargsrepr=kwargsrepr,
    )


#: options a Celery caller may pass that have no meaning here
_IGNORED_OPTIONS = ("connection", "producer", "publisher", "mandatory", "immediate", "compression", "delivery_mode", "stamped_headers", "stamps")  # fmt: skip


def send(
    name: str,
    args: list,
    kwargs: dict,
    *,
    task: Task | None = None,
    queue: str | None = None,
    routing_key: str | None = None,
    exchange: str | None = None,
    priority: int | None = None,
    serializer: str | None = None,
    retry: bool | None = None,
    retry_policy: dict[str, Any] | None = None,
    add_to_parent: bool = True,
    **options: Any,
) -> AsyncResult:
    """Publish task ``name``; ``task`` (when known locally) supplies defaults.

    Inside :func:`django_tasks_q.bulk.publishing_batch` the message is encoded now and
    published when the batch ends.
    """
    from .result import AsyncResult

    conf = settings.as_dict()
    if options:
        for unused in _IGNORED_OPTIONS:
            options.pop(unused, None)
    route = route_for(name, args, kwargs, options) if conf["TASK_ROUTES"] else _NO_ROUTE
    queue = queue or route.get("queue") or (task.queue if task else None) or conf["DEFAULT_QUEUE"]
    routing_key = routing_key or route.get("routing_key") or (task.routing_key if task else None)
    if priority is None:
        priority = route.get("priority")
    if priority is None and task is not None:
        priority = task.priority
    if priority is None:
        priority = conf["DEFAULT_PRIORITY"]
    if priority is not None and not (isinstance(priority, int) and 0 <= priority <= 9):
        raise ValueError(f"priority for task {name!r} must be an int from 0 to 9, got {priority!r}")
    message = build_message(name, args, kwargs, task=task, priority=priority, **options)
    serializer = serializer or (task.serializer if task else None) or conf["TASK_SERIALIZER"]
    encoded = encode_checked(message, serializer, conf["MESSAGE_MAX_SIZE"])
    publish_options = {"routing_key": routing_key, "exchange": exchange, "priority": priority, "retry": retry, "retry_policy": retry_policy}  # fmt: skip
    batch = current_batch.get()
    if batch is not None:
        batch.add(message, encoded, queue, publish_options)
    else:
        producer.get_publisher().publish(encoded, queue, **publish_options)
        sent(message, queue)
    result = AsyncResult(message.id, task_name=name)
    if add_to_parent:
        current = _state.current_request.get()
        if current is not None and not current.called_directly:
            current.children.append(result)
    return result


_NO_ROUTE: dict[str, Any] = {}


def sent(message: Message, queue: str) -> None:
    """Fire ``task_sent`` for a published message (a no-op without receivers)."""
    if task_sent.receivers:
        task_sent.send(sender=message.task, task_id=message.id, message=message, queue=queue)


def encode_checked(message: Message, serializer: str, max_size: int | None = -1):
    """Encode, turning a failure into an error that names the task and the argument."""
    try:
        return message.encode(
            serializer, max_size=settings.MESSAGE_MAX_SIZE if max_size == -1 else max_size
        )
    except EncodeError as exc:
        if "MESSAGE_MAX_SIZE" in str(exc):
            raise
        raise EncodeError(_which_argument(message, serializer) or str(exc)) from exc


def _which_argument(message: Message, serializer: str) -> str | None:
    from .serialization import dumps

    for label, value in [(f"argument {i}", v) for i, v in enumerate(message.args)] + [
        (f"keyword argument {k!r}", v) for k, v in message.kwargs.items()
    ]:
        try:
            dumps(value, serializer)
        except EncodeError:
            return (
                f"Task {message.task!r}: {label} of type {type(value).__name__} cannot be "
                f"serialised with {serializer!r}. Pass JSON-friendly values (numbers, strings, "
                "lists, dicts, or an id to look the object up) or add a serializer to "
                "ACCEPT_CONTENT and set serializer=."
            )
    return None


def send_retry(
    task: Task,
    request: Request,
    args: Any,
    kwargs: Any,
    *,
    eta: datetime | None,
    countdown: float | None,
    **options: Any,
) -> Any:
    """Publish the retry of ``request`` (same id, retries + 1); return its signature."""
    from .canvas import Signature

    new_args = list(request.args if args is None else args)
    new_kwargs = dict(request.kwargs if kwargs is None else kwargs)
    sig = Signature(
        task.name,
        new_args,
        new_kwargs,
        options={
            "task_id": request.id,
            "retries": request.retries + 1,
            "link": request.callbacks,
            "link_error": request.errbacks,
            "chain": request.chain,
            "chord": request.chord,
            "group_id": request.group,
            "group_index": request.group_index,
            "parent_id": request.parent_id,
            "root_id": request.root_id,
            "countdown": countdown,
            "eta": eta,
            "queue": (request.delivery_info or {}).get("routing_key") or None,
            "priority": (request.delivery_info or {}).get("priority"),
            **options,
        },
        task_obj=task,
    )
    if request.is_eager:
        return sig
    opts = dict(sig.options)
    retries = opts.pop("retries")
    queue = opts.pop("queue", None)
    priority = opts.pop("priority", None)
    send(
        task.name, new_args, new_kwargs, task=task, queue=queue, priority=priority,
        retries=retries, add_to_parent=False, **_sendable(opts),
    )  # fmt: skip
    return sig


def _sendable(opts: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in opts.items() if v is not None and k != "immutable"}


def send_task(name: str, args: Any = None, kwargs: Any = None, **options: Any) -> AsyncResult:
    """Enqueue a task by name, without importing its function."""
    from .registry import tasks

    known = tasks.get(name)
    args = list(args or ())
    kwargs = dict(kwargs or {})
    if settings.ALWAYS_EAGER and known is not None:
        return known.apply(args, kwargs, task_id=options.get("task_id"))
    options.pop("task", None)
    return send(name, args, kwargs, task=known, **options)
