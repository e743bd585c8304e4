"""The worker's side of remote control: a pidbox node answering Celery's commands.

``ControlDispatcher(worker)`` owns the node for ``worker.hostname``. Plug it into
the worker in one of two ways:

* ``consumer = dispatcher.consumer(channel)`` on a channel of a connection the
  worker already drains: handlers then run on the worker's own thread;
* ``ControlThread(dispatcher).start()``: a thread with its own connection that
  drains control messages (handlers run on that thread; the worker methods they
  call must be thread-safe).

The worker object must offer ``hostname``, ``active_requests()``,
``reserved_requests()``, ``scheduled_requests()``, ``stats()``,
``registered_tasks()``, ``terminate_task(task_id, signal) -> bool``,
``set_rate_limit(task_name, rate)``, ``set_time_limit(task_name, soft, hard)``,
``pool_grow(n)``, ``pool_shrink(n)``, ``add_consumer(queue)``,
``cancel_consumer(queue)`` and ``shutdown()``. A method may raise ``KeyError``
(unknown task), ``ValueError`` or ``NotImplementedError``; the caller then gets
``{"error": ...}``. Nothing a control message carries can crash the worker.
"""

from __future__ import annotations

import inspect
import json
import logging
import threading
from collections.abc import Callable
from datetime import date, datetime
from typing import Any

from kombu import Connection, Consumer
from kombu.pidbox import Node

from .. import revocation
from ..control.arguments import check_count, check_queue_name
from ..control.mailbox import new_mailbox
from ..exceptions import NotRegistered
from ..ratelimit import parse_rate

logger = logging.getLogger(__name__)

#: name -> handler(worker, **arguments); filled by @command below
COMMANDS: dict[str, Callable[..., Any]] = {}
#: names of the read-only commands (``inspect``)
INSPECT_COMMANDS: set[str] = set()


def ok(value: Any) -> dict[str, Any]:
    return {"ok": value}


def nok(value: Any) -> dict[str, Any]:
    return {"error": value}


def command(name: str | None = None, inspect_only: bool = False) -> Callable:
    def register(fun: Callable[..., Any]) -> Callable[..., Any]:
        COMMANDS[name or fun.__name__] = fun
        if inspect_only:
            INSPECT_COMMANDS.add(name or fun.__name__)
        return fun

    return register


def jsonable(value: Any) -> Any:
    """``value`` made JSON-safe: request objects via ``info()``, dates as ISO, the rest by repr."""
    info = getattr(value, "info", None)
    if callable(info) and not isinstance(value, type):
        value = info()
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return (
            value if value == value and value not in (float("inf"), float("-inf")) else repr(value)
        )
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return repr(value)


# -- inspect commands -------------------------------------------------------------------


@command(inspect_only=True)
def ping(worker: Any, **_: Any) -> dict[str, Any]:
    return ok("pong")


@command(inspect_only=True)
def active(worker: Any, safe: Any = None, **_: Any) -> Any:
    return list(worker.active_requests())


@command(inspect_only=True)
def reserved(worker: Any, **_: Any) -> Any:
    return list(worker.reserved_requests())


@command(inspect_only=True)
def scheduled(worker: Any, **_: Any) -> Any:
    return list(worker.scheduled_requests())


@command(inspect_only=True)
def registered(worker: Any, taskinfoitems: Any = None, builtins: bool = False, **_: Any) -> Any:
    names = sorted(worker.registered_tasks())
    if not builtins:
        names = [n for n in names if not str(n).startswith(("tasks_q.", "celery."))]
    return names


@command(inspect_only=True)
def stats(worker: Any, **_: Any) -> Any:
    return worker.stats()


@command(inspect_only=True)
def revoked(worker: Any, **_: Any) -> Any:
    return sorted(revocation.revoked_ids())


@command(inspect_only=True)
def active_queues(worker: Any, **_: Any) -> Any:
    queues = getattr(worker, "active_queues", None)
    if queues is None:
        return nok("this worker does not report its queues")
    return [q if isinstance(q, dict) else {"name": str(q)} for q in queues()]


@command(inspect_only=True)
def hello(worker: Any, from_node: Any = None, revoked: Any = None, **_: Any) -> Any:
    """Celery's mingle greeting: take the sender's revoked ids, answer with ours."""
    if from_node == worker.hostname:
        return None
    if isinstance(revoked, dict | list):
        ids = [i for i in revoked if isinstance(i, str) and i]
        if ids:
            revocation.remember(ids)
    return {"revoked": sorted(revocation.revoked_ids()), "clock": 0}


# -- control commands -------------------------------------------------------------------


def _revoke(worker: Any, task_ids: list[str], terminate: bool, sig: str) -> dict[str, Any]:
    revocation.remember(task_ids, terminate=terminate, signal=sig)
    if not terminate:
        return ok(f"tasks {', '.join(task_ids)} flagged as revoked")
    terminated = [t for t in task_ids if worker.terminate_task(t, sig)]
    if not terminated:
        return ok("terminate: tasks unknown")
    return ok(f"terminate: {', '.join(terminated)}")


@command()
def revoke(worker: Any, task_id: Any, terminate: bool = False, signal: Any = None, **_: Any) -> Any:
    ids = revocation.task_ids_of(task_id)
    return _revoke(worker, ids, bool(terminate), revocation.normalize_signal(signal))


@command()
def terminate(worker: Any, signal: Any, task_id: Any, **_: Any) -> Any:
    ids = revocation.task_ids_of(task_id)
    return _revoke(worker, ids, True, revocation.normalize_signal(signal))


@command()
def rate_limit(worker: Any, task_name: str, rate_limit: Any, **_: Any) -> Any:
    try:
        parse_rate(rate_limit)
    except ValueError as exc:
        return nok(f"Invalid rate limit string: {exc}")
    worker.set_rate_limit(task_name, rate_limit)
    if not rate_limit:
        return ok("rate limit disabled successfully")
    return ok("new rate limit set successfully")


@command()
def time_limit(worker: Any, task_name: str, soft: Any = None, hard: Any = None, **_: Any) -> Any:
    for label, value in (("soft", soft), ("hard", hard)):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int | float) or value <= 0
        ):
            return nok(f"{label} time limit must be a number of seconds > 0 or null, got {value!r}")
    worker.set_time_limit(task_name, soft, hard)
    return ok("time limits set successfully")


@command()
def pool_grow(worker: Any, n: Any = 1, **_: Any) -> Any:
    worker.pool_grow(check_count(n))
    return ok("pool will grow")


@command()
def pool_shrink(worker: Any, n: Any = 1, **_: Any) -> Any:
    worker.pool_shrink(check_count(n))
    return ok("pool will shrink")


@command()
def add_consumer(worker: Any, queue: Any, **_: Any) -> Any:
    check_queue_name(queue)
    name = queue.strip()
    worker.add_consumer(name)
    return ok(f"add consumer {name}")


@command()
def cancel_consumer(worker: Any, queue: Any, **_: Any) -> Any:
    check_queue_name(queue)
    name = queue.strip()
    worker.cancel_consumer(name)
    return ok(f"no longer consuming from {name}")


@command()
def shutdown(worker: Any, msg: str = "Got shutdown from remote", **_: Any) -> Any:
    logger.warning("%s", msg)
    worker.shutdown()
    return ok("shutting down")


# -- dispatch ---------------------------------------------------------------------------


def run_command(worker: Any, method: Any, arguments: Any) -> Any:
    """Run one command; every failure becomes ``{"error": "..."}`` naming the problem."""
    if not isinstance(method, str) or method not in COMMANDS:
        return nok(
            f"unknown control command {method!r}; known commands: {', '.join(sorted(COMMANDS))}"
        )
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, dict) or not all(isinstance(k, str) for k in arguments):
        return nok(f"arguments of {method!r} must be a JSON object, got {arguments!r}")
    handler = COMMANDS[method]
    try:
        inspect.signature(handler).bind(worker, **arguments)
    except TypeError as exc:
        return nok(f"bad arguments for {method!r}: {exc}")
    try:
        return jsonable(handler(worker, **arguments))
    except NotRegistered as exc:
        return nok(f"{method}: {exc}")
    except KeyError as exc:
        return nok(f"{method}: unknown {exc.args[0] if exc.args else 'name'!r}")
    except (ValueError, TypeError, NotImplementedError) as exc:
        return nok(f"{method}: {exc}")
    except Exception as exc:
        logger.exception("Control command %r failed", method)
        return nok(f"{method} failed: {exc!r}")


class ControlNode(Node):
    """A pidbox node whose handlers answer errors instead of raising."""

    def handle(self, method: str, arguments: dict[str, Any] | None = None) -> Any:
        return run_command(self.state, method, arguments)


class ControlDispatcher:
    """The pidbox node of one worker, and its consumer."""

    def __init__(self, worker: Any, hostname: str | None = None) -> None:
        self.worker = worker
        self.hostname = hostname or worker.hostname
        mailbox = new_mailbox()
        self.node = ControlNode(self.hostname, state=worker, handlers=COMMANDS, mailbox=mailbox)
        self._consumer: Consumer | None = None

    def consumer(self, channel: Any) -> Consumer:
        """Start consuming this node's queue on ``channel``; the caller drains the connection."""
        self.node.channel = channel
        self._consumer = self.node.listen(channel=channel, callback=self.on_message)
        return self._consumer

    def on_message(self, body: Any, message: Any = None) -> None:
        """Handle one control message; log and swallow anything that goes wrong."""
        if not isinstance(body, dict):
            logger.warning("Ignoring a control message that is not a JSON object: %r", body)
            return
        try:
            self.node.handle_message(body, message)
        except Exception:
            logger.exception("Could not handle control message %r", body.get("method"))

    def cancel(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            try:
                consumer.cancel()
            except Exception:  # the channel may already be gone
                pass


class ControlThread(threading.Thread):
    """Drains control messages on its own connection until :meth:`stop`; reconnects on errors."""

    def __init__(
        self, dispatcher: ControlDispatcher, url: str | None = None, poll: float = 1.0
    ) -> None:
        super().__init__(name=f"tasks_q-control-{dispatcher.hostname}", daemon=True)
        self.dispatcher = dispatcher
        self.url = url
        self.poll = poll
        self.ready = threading.Event()
        self._stopping = threading.Event()

    def stop(self, timeout: float | None = 5.0) -> None:
        self._stopping.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout)

    def run(self) -> None:
        from ..control.mailbox import control_connection
        from ..messaging.connection import mask_url

        backoff = 0.1
        while not self._stopping.is_set():
            conn: Connection = control_connection(self.url)
            try:
                conn.ensure_connection(max_retries=1)
                self.dispatcher.consumer(conn.channel())
                self._drain(conn, 0.01)  # some transports subscribe on the first drain
                self.ready.set()
                backoff = 0.1
                while not self._stopping.is_set():
                    self._drain(conn, self.poll)
            except Exception as exc:
                logger.warning(
                    "Control consumer of %s lost the broker at %s (%r); reconnecting in %.1fs",
                    self.dispatcher.hostname, mask_url(conn.as_uri()), exc, backoff,
                )  # fmt: skip
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, 5.0)
            finally:
                self.dispatcher.cancel()
                self._close(conn)

    @staticmethod
    def _drain(conn: Connection, timeout: float) -> None:
        try:
            conn.drain_events(timeout=timeout)
        except TimeoutError:
            pass

    @staticmethod
    def _close(conn: Connection) -> None:
        try:
            conn.release()
        except Exception:
            pass
        try:
            from django.db import connection as db_connection

            db_connection.close()  # this thread's Django connection (django:// broker)
        except Exception:
            pass
