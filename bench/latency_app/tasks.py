"""The round-trip tasks of ``bench/latency_probe.py``, and its timing hooks.

With ``LATENCY_TRACE=1`` in the environment, importing this module wraps a few
methods of the worker, the Redis transport and the result store (never editing
them) so that each process records ``(time.time(), event, detail)`` tuples in
memory. ``latency.stamp`` returns the events its process recorded since the last
``stamp`` ran there, so the client rebuilds each process's timeline from results
alone, with no extra I/O in the measured path. Events after a task body (result
write, acks, the next claim) arrive with the next task run by the same process.
"""

from __future__ import annotations

import functools
import os
import time
from typing import Any

from django_tasks_q import task

QUEUE = os.environ.get("LATENCY_QUEUE", "h5-latency")
EVENTS: list[tuple[float, str, Any]] = []


@task(name="latency.noop", queue=QUEUE)
def noop() -> None:
    return None


@task(name="latency.stamp", queue=QUEUE)
def stamp() -> dict[str, Any]:
    now = time.time()
    events = EVENTS[:]
    EVENTS.clear()
    return {"pid": os.getpid(), "body": now, "events": events}


def note(event: str, detail: Any = None) -> None:
    EVENTS.append((time.time(), event, detail))


def _wrap(owner: Any, name: str, before: str | None, after: str | None, detail: Any = None) -> None:
    original = getattr(owner, name)

    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if before:
            note(before, detail(args, None) if detail else None)
        result = original(*args, **kwargs)
        if after:
            note(after, detail(args, result) if detail else None)
        return result

    setattr(owner, name, wrapper)


def install() -> None:
    from django_tasks_q import signals
    from django_tasks_q.messaging.redis import channel, inflight
    from django_tasks_q.results.cache import RedisStore
    from django_tasks_q.worker import consumer, engine

    def claimed(args: Any, result: Any) -> Any:
        return None if result is None else len(result.messages)

    def record_ids(args: Any, result: Any) -> Any:
        return [r["task_id"] for r in args[1]]

    _wrap(channel.Channel, "_brpop_read", "xread_reply", None)
    _wrap(inflight.InFlight, "claim", "claim_send", "claim_reply", claimed)
    _wrap(inflight.InFlight, "flush_acks", "hdel_send", "hdel_reply")
    _wrap(RedisStore, "write_records", "store_send", "store_reply", record_ids)
    _wrap(engine.Engine, "flush", "flush_begin", "flush_end")
    _wrap(consumer.BrokerConsumer, "drain", "drain_begin", "drain_end")

    original_start = channel.Channel._brpop_start

    def brpop_start(self: Any, *args: Any, **kwargs: Any) -> Any:
        polling = self._in_poll
        result = original_start(self, *args, **kwargs)
        if self._in_poll and not polling:
            note("xread_sent")
        return result

    channel.Channel._brpop_start = brpop_start

    def received(sender: Any, request: Any, **kwargs: Any) -> None:
        note("received", request.id)

    def prerun(sender: Any, task_id: str, **kwargs: Any) -> None:
        note("prerun", task_id)

    signals.task_received.connect(received, weak=False)
    signals.task_prerun.connect(prerun, weak=False)


def experiment_take_waiting() -> None:
    """EXPERIMENT (``LATENCY_EXPERIMENT=take_waiting``), for the worker's maintainers.

    ``Engine._take_waiting`` drains with a 0.5 ms timeout after every delivery to batch
    what is already claimed or on the wire. On Redis that drain claims again and sends
    a 1 ms blocking XREAD; on RabbitMQ it waits on the socket for 1 ms. This variant
    takes more only when something is already there: the Redis channel's claim buffer,
    or a readable AMQP socket.
    """
    import select

    from django_tasks_q.worker import engine

    def waiting(eng: Any) -> bool:
        channel = eng.consumer.channel
        if hasattr(channel, "_buffer"):  # our Redis channel: the claim already took all there was
            return bool(channel._buffer)
        transport = getattr(eng.consumer.connection.connection, "transport", None)
        sock = getattr(transport, "sock", None)
        if sock is None:
            return True
        return bool(select.select([sock], [], [], 0)[0])

    def take_waiting(self: Any) -> None:
        limit = self.config.prefetch_count
        while (
            not self.stopping
            and len(self.ready) < limit
            and waiting(self)
            and self.consumer.drain(engine.GREEDY_WAIT)
        ):
            pass

    engine.Engine._take_waiting = take_waiting


if os.environ.get("LATENCY_TRACE") == "1":
    install()
if "take_waiting" in os.environ.get("LATENCY_EXPERIMENT", ""):
    experiment_take_waiting()
