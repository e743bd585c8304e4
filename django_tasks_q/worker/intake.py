"""From a raw broker message to a :class:`Job`, or to a clear refusal.

Everything a message can get wrong is caught here, reported in one log line,
kept as a dead letter (and as a FAILURE result when the task id is known), and
acked: the worker stays up and the message is not redelivered forever.

* content type not in ``ACCEPT_CONTENT`` (nothing is unpickled unless allowed);
* a body that does not decode, or is not ``[args, kwargs, embed]``;
* missing or malformed protocol-v2 headers;
* a task name no module registered;
* arguments that do not fit the function;
* delivered more than ``MAX_DELIVERIES`` times (the task keeps killing workers).

A job then becomes ready, or is held (a near ETA), or goes to the delayed store
(a far one): :func:`route`. When its turn comes, :func:`admit` checks it was not
revoked, has not expired and is within its rate limit.
"""

from __future__ import annotations

import inspect
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from .. import signals, states
from ..callbacks import on_redelivered_finished
from ..exceptions import (
    ContentDisallowed,
    DecodeError,
    InvalidMessage,
    NotRegistered,
    WorkerLostError,
)
from ..message import Message
from ..registry import tasks
from ..request import Request
from . import delayed, outcomes
from .holding import seconds_until
from .jobs import Job

if TYPE_CHECKING:
    from ..task import Task
    from .engine import Engine

logger = logging.getLogger("django_tasks_q.worker")

_signatures: dict[int, inspect.Signature | None] = {}


def delivery_count(raw: Any, lost: int, amqp: bool) -> int:
    """How many times this message was delivered, this delivery included."""
    header = (raw.headers or {}).get("x-delivery-count")
    count = 1
    if isinstance(header, int) and not isinstance(header, bool) and header >= 0:
        # RabbitMQ (quorum queues) counts earlier deliveries; our transports count this one.
        count = header + 1 if amqp else max(1, header)
    if (raw.delivery_info or {}).get("redelivered"):
        count = max(count, 2)
    return max(count, lost + 1)


def _delivery_info(raw: Any, queue: str) -> dict[str, Any]:
    info = raw.delivery_info or {}
    return {
        "exchange": info.get("exchange"),
        "routing_key": info.get("routing_key") or queue,
        "priority": (raw.properties or {}).get("priority", info.get("priority")),
        "redelivered": bool(info.get("redelivered")),
        "queue": queue,
    }


def check_call(task: Task, args: list, kwargs: dict) -> str | None:
    """Why ``args``/``kwargs`` do not fit ``task``'s function, or None."""
    fun = task._fun if task._fun is not None else task.run
    key = id(fun)
    if key not in _signatures:
        try:
            _signatures[key] = inspect.signature(fun)
        except (TypeError, ValueError):
            _signatures[key] = None
    sig = _signatures[key]
    if sig is None:
        return None
    try:
        if task._fun is not None and task._bind:
            sig.bind(task, *args, **kwargs)
        else:
            sig.bind(*args, **kwargs)
    except TypeError as exc:
        return f"Task {task.name!r} called with wrong arguments: {exc}"
    return None


def receive(engine: Engine, queue: str, raw: Any) -> Job | None:
    """Turn ``raw`` into a Job, or settle it (dead letter, FAILURE, ack) and return None."""
    headers = raw.headers or {}
    task_id = headers.get("id") if isinstance(headers.get("id"), str) else None
    task_name = headers.get("task") if isinstance(headers.get("task"), str) else None
    try:
        message = Message.decode(
            raw.body, raw.content_type, raw.content_encoding, headers, raw.properties, engine.accept
        )
    except ContentDisallowed as exc:
        engine.refuse(raw, queue, "content_disallowed", str(exc), task_id, task_name, exc)
        return None
    except InvalidMessage as exc:
        engine.refuse(raw, queue, "invalid_message", str(exc), task_id, task_name, exc)
        return None
    except DecodeError as exc:
        engine.refuse(raw, queue, "undecodable", str(exc), task_id, task_name, exc)
        return None

    task = tasks.get(message.task)
    if task is None:
        detail = (
            f"Received unregistered task {message.task!r} (id {message.id}). Is the module "
            "that defines it in an installed app's tasks.py, and is this worker's code up to date?"
        )
        engine.refuse(
            raw,
            queue,
            "unknown_task",
            detail,
            message.id,
            message.task,
            NotRegistered(message.task),
        )
        return None

    redelivered = bool((raw.delivery_info or {}).get("redelivered"))
    lost = engine.lost_count(message.id) if redelivered else 0
    count = delivery_count(raw, lost, engine.amqp)
    request = Request.from_message(
        message,
        hostname=engine.hostname,
        delivery_info=_delivery_info(raw, queue),
        delivery_count=count,
    )
    acks_late = task.effective_acks_late
    job = Job(raw=raw, request=request, task=task, queue=queue, acks_late=acks_late)

    if count > engine.max_deliveries:
        exc = WorkerLostError(
            f"Task {task.name}[{message.id}] was delivered {count} times, over MAX_DELIVERIES="
            f"{engine.max_deliveries}: the process running it kept dying. Kept as a dead letter."
        )
        engine.refuse(raw, queue, "worker_lost", str(exc), message.id, task.name, exc, request)
        return None
    if lost and not task.reject_on_worker_lost:
        # A process of this worker died running it (and stored the failure): do not run it again.
        exc = WorkerLostError(f"Worker process exited while running task {task.name}[{message.id}]")
        engine.settle_without_running(job, states.FAILURE, exc)
        return None
    if count > 1 and engine.already_done(message.id):
        logger.info(
            "Task %s[%s] redelivered after it finished; acked, not run again", task.name, message.id
        )
        on_redelivered_finished(task, request, engine.store)  # its chord may not have counted it
        engine.ack(job)
        return None
    problem = check_call(task, message.args, message.kwargs) if task.typing else None
    if problem is not None:
        engine.refuse(
            raw, queue, "bad_arguments", problem, message.id, task.name, TypeError(problem), request
        )
        return None

    signals.task_received.send(sender=task, request=request)
    if engine.events.enabled:  # (building the fields costs more than the disabled send)
        engine.events.send(
            "task-received", uuid=message.id, name=task.name,
            args=message.argsrepr or repr(message.args),
            kwargs=message.kwargsrepr or repr(message.kwargs), root_id=message.root_id,
            parent_id=message.parent_id, retries=message.retries,
            eta=message.eta.isoformat() if message.eta else None,
            expires=message.expires.isoformat() if message.expires else None,
        )  # fmt: skip
    if engine.debug:
        logger.debug("Received task %s[%s] from %s", task.name, message.id, queue)
    return job


def route(engine: Engine, queue: str, raw: Any) -> None:
    """The consumer's callback: a received message becomes ready, held, deferred or refused."""
    job = receive(engine, queue, raw)
    if job is None:
        return
    if engine.stopping:  # given back once receiving has stopped (never from in here)
        engine.ready.append(job)
        return
    eta = job.request.eta
    if eta is not None:
        left = seconds_until(eta)
        if left > 0:
            if left <= engine.eta_horizon and not engine.holding.full:
                engine.holding.hold(job, left, "eta")
            else:
                delayed.defer(engine, job)
            return
    engine.ready.append(job)


def admit(engine: Engine, job: Job) -> bool:
    """Checks at the moment a job would start: revoked, expired, over its rate limit."""
    from ..revocation import is_revoked

    if is_revoked(job.id):
        outcomes.revoked(engine, job)
        return False
    expires = job.request.expires
    if expires is not None and expires <= datetime.now(UTC):
        outcomes.revoked(engine, job, expired=True)
        return False
    wait = engine.table.rate_wait(job.task.name)
    if wait > 0:
        engine.holding.hold(job, wait, "rate")
        return False
    return True
