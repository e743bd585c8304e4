"""``control``: Celery's remote-control client, over kombu's pidbox broadcast.

``control.ping()``, ``control.revoke(id)``, ``control.rate_limit("app.task", "10/m")``
and ``control.inspect().active()`` have Celery's signatures and reply shapes; see
:mod:`.mailbox` for what is matched on the wire.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from django.db import DatabaseError
from kombu import Connection, Consumer, Producer
from kombu.exceptions import KombuError

from ..conf import settings
from .arguments import check_count, check_queue_name, check_seconds, check_task_name, destinations
from .inspector import Inspect
from .mailbox import Connections, ControlError, connections, new_mailbox, reply_queue

Replies = list[dict[str, Any]]


class Control:
    """Send control commands to workers and collect their replies."""

    def __init__(self, pool: Connections | None = None) -> None:
        self._connections = pool or connections
        self.mailbox = new_mailbox()

    # -- inspect -----------------------------------------------------------------------

    def inspect(
        self,
        destination: str | Iterable[str] | None = None,
        timeout: float = 1.0,
        limit: int | None = None,
        callback: Callable[[dict], None] | None = None,
        pattern: str | None = None,
        matcher: str | None = None,
    ) -> Inspect:
        """An :class:`Inspect` whose methods return ``{hostname: reply}``."""
        return Inspect(
            self, destination=destination, timeout=timeout, limit=limit,
            callback=callback, pattern=pattern, matcher=matcher,
        )  # fmt: skip

    # -- control commands (Celery's names and arguments) -------------------------------

    def revoke(
        self,
        task_id: str | Iterable[str],
        destination: str | Iterable[str] | None = None,
        terminate: bool = False,
        signal: str | int = "SIGTERM",
        *,
        expires: float | None = None,
        reply: bool = False,
        timeout: float = 1.0,
    ) -> Replies | None:
        """Revoke task ids: persisted (see :mod:`django_tasks_q.revocation`) and broadcast."""
        from ..revocation import revoke

        return revoke(
            task_id, terminate=terminate, signal=signal, expires=expires,
            destination=destination, reply=reply, timeout=timeout,
        )  # fmt: skip

    def terminate(
        self,
        task_id: str | Iterable[str],
        destination: str | Iterable[str] | None = None,
        signal: str | int = "SIGTERM",
        **options: Any,
    ) -> Replies | None:
        """Revoke and signal the process running the task (``revoke(terminate=True)``)."""
        return self.revoke(
            task_id, destination=destination, terminate=True, signal=signal, **options
        )

    def rate_limit(
        self,
        task_name: str,
        rate_limit: str | int | float | None,
        destination: str | Iterable[str] | None = None,
        **options: Any,
    ) -> Replies | None:
        """Set a task's rate limit (``"10/m"``, ``5`` per second; ``0``/None: no limit)."""
        from ..ratelimit import parse_rate

        check_task_name(task_name)
        parse_rate(rate_limit)  # raise here, with the valid forms, rather than on every worker
        return self.broadcast(
            "rate_limit", {"task_name": task_name, "rate_limit": rate_limit},
            destination=destination, **options,
        )  # fmt: skip

    def time_limit(
        self,
        task_name: str,
        soft: float | None = None,
        hard: float | None = None,
        destination: str | Iterable[str] | None = None,
        **options: Any,
    ) -> Replies | None:
        """Set a task's soft and hard time limits (seconds; None removes one)."""
        check_task_name(task_name)
        soft = check_seconds("soft", soft)
        hard = check_seconds("hard", hard)
        if soft is not None and hard is not None and soft > hard:
            raise ValueError(f"soft time limit ({soft}s) must not exceed the hard one ({hard}s)")
        return self.broadcast(
            "time_limit", {"task_name": task_name, "soft": soft, "hard": hard},
            destination=destination, **options,
        )  # fmt: skip

    def shutdown(
        self, destination: str | Iterable[str] | None = None, **options: Any
    ) -> Replies | None:
        """Ask workers to finish their running tasks and stop (a warm shutdown)."""
        return self.broadcast("shutdown", {}, destination=destination, **options)

    def pool_grow(
        self, n: int = 1, destination: str | Iterable[str] | None = None, **options: Any
    ) -> Replies | None:
        return self.broadcast(
            "pool_grow", {"n": check_count(n)}, destination=destination, **options
        )

    def pool_shrink(
        self, n: int = 1, destination: str | Iterable[str] | None = None, **options: Any
    ) -> Replies | None:
        return self.broadcast(
            "pool_shrink", {"n": check_count(n)}, destination=destination, **options
        )

    def add_consumer(
        self,
        queue: str,
        exchange: str | None = None,
        exchange_type: str = "direct",
        routing_key: str | None = None,
        options: dict[str, Any] | None = None,
        destination: str | Iterable[str] | None = None,
        **broadcast_options: Any,
    ) -> Replies | None:
        """Tell workers to start consuming from ``queue``."""
        check_queue_name(queue)
        arguments = {
            "queue": queue,
            "exchange": exchange,
            "exchange_type": exchange_type,
            "routing_key": routing_key,
        }
        arguments.update(options or {})
        return self.broadcast(
            "add_consumer", arguments, destination=destination, **broadcast_options
        )

    def cancel_consumer(
        self, queue: str, destination: str | Iterable[str] | None = None, **options: Any
    ) -> Replies | None:
        """Tell workers to stop consuming from ``queue``."""
        check_queue_name(queue)
        return self.broadcast(
            "cancel_consumer", {"queue": queue}, destination=destination, **options
        )

    def ping(
        self, destination: str | Iterable[str] | None = None, timeout: float = 1.0, **options: Any
    ) -> Replies:
        """``[{hostname: {"ok": "pong"}}, ...]`` from every worker that answered in time."""
        return (
            self.broadcast(
                "ping", {}, destination=destination, reply=True, timeout=timeout, **options
            )
            or []
        )

    # -- queues ------------------------------------------------------------------------

    def purge(self, queues: Iterable[str] | None = None) -> int:
        """Delete every waiting message from ``queues`` (default: all configured); return the count.

        Messages already reserved by a worker are not touched.
        """
        return sum(n or 0 for n in self._each_queue(queues, purge=True).values())

    def queue_sizes(self, queues: Iterable[str] | None = None) -> dict[str, int | None]:
        """Waiting messages per queue (None where the broker cannot tell)."""
        return self._each_queue(queues, purge=False)

    def _each_queue(self, queues: Iterable[str] | None, purge: bool) -> dict[str, int | None]:
        from ..messaging.producer import get_publisher
        from ..routing import declared_queues

        specs = {s.name: s.max_priority for s in declared_queues()}
        if isinstance(queues, str):
            queues = [q.strip() for q in queues.split(",") if q.strip()]
        names = list(dict.fromkeys(queues)) if queues else list(specs)
        for name in names:
            check_queue_name(name)
        publisher = get_publisher()
        counts: dict[str, int | None] = {}

        def work(conn: Connection) -> None:
            channel = conn.default_channel
            for name in names:
                queue = publisher.entities(name, specs.get(name))[1](channel)
                queue.declare()
                if purge:
                    counts[name] = queue.purge() or 0
                else:
                    declared = (
                        queue.queue_declare()
                    )  # idempotent; passive fails for empty Redis queues
                    counts[name] = getattr(declared, "message_count", None)

        self._with_connection("purge" if purge else "queue_sizes", work)
        return counts

    # -- broadcast ---------------------------------------------------------------------

    def broadcast(
        self,
        command: str,
        arguments: dict[str, Any] | None = None,
        destination: str | Iterable[str] | None = None,
        reply: bool = False,
        timeout: float = 1.0,
        limit: int | None = None,
        callback: Callable[[dict], None] | None = None,
        pattern: str | None = None,
        matcher: str | None = None,
        connection: Connection | None = None,
    ) -> Replies | None:
        """Send ``command`` to every worker (or to ``destination``).

        With ``reply=True`` wait up to ``timeout`` seconds and return the replies,
        ``[{hostname: reply}, ...]``; stop early once ``limit`` replies (or one per
        destination) arrived.
        """
        if not isinstance(command, str) or not command:
            raise ValueError(f"command must be a non-empty string, got {command!r}")
        if arguments is not None and not isinstance(arguments, dict):
            raise ValueError(f"arguments must be a dict of keyword arguments, got {arguments!r}")
        timeout = check_seconds("timeout", timeout, allow_none=False)
        dest = destinations(destination)
        if limit is None and dest:
            limit = len(dest)
        message: dict[str, Any] = {
            "method": command,
            "arguments": dict(arguments or {}),
            "destination": dest,
            "pattern": pattern,
            "matcher": matcher,
        }

        def work(conn: Connection) -> Replies | None:
            channel = conn.default_channel
            if not reply:
                self._publish(channel, message, timeout)
                return None
            return self._call(conn, channel, message, timeout, limit, callback)

        return self._with_connection(command, work, connection)

    def _publish(self, channel: Any, message: dict[str, Any], timeout: float) -> None:
        exchange = self.mailbox.exchange
        Producer(channel, auto_declare=False).publish(
            message,
            exchange=exchange.name,
            declare=[exchange],
            headers={"clock": self.mailbox.clock.forward(), "expires": time.time() + timeout},
            serializer="json",
            retry=True,
            retry_policy=dict(settings.PUBLISH_RETRY_POLICY),
        )

    def _call(
        self,
        conn: Connection,
        channel: Any,
        message: dict[str, Any],
        timeout: float,
        limit: int | None,
        callback: Callable[[dict], None] | None,
    ) -> Replies:
        oid = str(uuid.uuid4())
        ticket = str(uuid.uuid4())
        queue = reply_queue(self.mailbox, oid)
        replies: Replies = []

        def on_reply(body: Any, msg: Any) -> None:
            self.mailbox.clock.adjust(msg.headers.get("clock") or 0)
            if msg.headers.get("ticket") != ticket or not isinstance(body, dict):
                return
            if callback is not None:
                callback(body)
            replies.append(body)

        consumer = Consumer(channel, [queue], accept=["json"], no_ack=True, callbacks=[on_reply])
        try:
            with consumer:
                self._publish(
                    channel,
                    {
                        **message,
                        "ticket": ticket,
                        "reply_to": {
                            "exchange": self.mailbox.reply_exchange.name,
                            "routing_key": oid,
                        },
                    },
                    timeout,
                )
                deadline = time.monotonic() + timeout
                while limit is None or len(replies) < limit:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    try:
                        conn.drain_events(timeout=remaining)
                    except TimeoutError:
                        break
        finally:
            try:
                channel.after_reply_message_received(queue.name)
            except Exception:  # the reply queue expires on its own
                pass
        return replies

    def _with_connection(
        self, what: str, work: Callable[[Connection], Any], connection: Connection | None = None
    ) -> Any:
        from ..messaging.connection import mask_url

        policy = settings.PUBLISH_RETRY_POLICY
        try:
            conn = connection or self._connections.acquire(
                timeout=settings.BROKER_CONNECTION_TIMEOUT * 2
            )
        except KombuError as exc:  # every pooled connection is busy
            raise ControlError(f"Could not send control command {what!r}: {exc!r}") from exc
        try:
            conn.ensure_connection(
                max_retries=policy.get("max_retries", 3),
                interval_start=policy.get("interval_start", 0),
                interval_step=policy.get("interval_step", 0.2),
                interval_max=policy.get("interval_max", 0.5),
            )
            return work(conn)
        except (
            KombuError,
            OSError,
            DatabaseError,
            *conn.connection_errors,
            *conn.channel_errors,
        ) as exc:
            _discard(conn)
            raise ControlError(
                f"Could not send control command {what!r} through the broker at "
                f"{mask_url(self._connections.url)}: {exc!r}. Is the broker running?"
            ) from exc
        finally:
            if connection is None:
                conn.release()


def _discard(conn: Connection) -> None:
    try:
        conn.collect()
    except Exception:
        pass


control = Control()
