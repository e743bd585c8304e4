"""Sending many tasks at once: one pipeline (Redis) or one transaction (``django://``).

``delay()`` waits for the broker once per task.  Inside :func:`publishing_batch`,
every task sent (``delay``, ``apply_async``, ``send_task``, a group's members) is
encoded at once but published when the block ends, in chunks of ``chunk`` messages:

* Redis: one pipelined round trip per chunk;
* ``django://``: one transaction per chunk (inside the caller's, if there is one);
* RabbitMQ: back to back on one channel.

:meth:`Task.delay_many` and :meth:`Task.apply_async_many` are shortcuts.  See
docs/calling.md ("Sending many tasks").
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .message import EncodedMessage, Message
    from .result import AsyncResult
    from .task import Task

#: messages per pipeline / transaction
DEFAULT_CHUNK = 1000


class PendingBatch:
    """Messages encoded inside :func:`publishing_batch` and not yet published."""

    def __init__(self, chunk: int = DEFAULT_CHUNK) -> None:
        if not isinstance(chunk, int) or chunk < 1:
            raise ValueError(f"publishing_batch(chunk=...) must be a positive int, got {chunk!r}")
        self.chunk = chunk
        self.sent = 0
        self._messages: list[tuple[Message, str]] = []
        self._items: list[tuple[EncodedMessage, str, dict[str, Any]]] = []

    def __len__(self) -> int:
        return len(self._items)

    def add(
        self, message: Message, encoded: EncodedMessage, queue: str, options: dict[str, Any]
    ) -> None:
        self._messages.append((message, queue))
        self._items.append((encoded, queue, options))
        if len(self._items) >= self.chunk:
            self.flush()

    def flush(self) -> None:
        """Publish what is pending, then fire ``task_sent`` for each message."""
        from .calling import sent
        from .messaging import producer

        if not self._items:
            return
        messages, items = self._messages, self._items
        self._messages, self._items = [], []
        publisher = producer.get_publisher()
        publish_many = getattr(publisher, "publish_many", None)
        if publish_many is not None:
            publish_many(items)
        else:  # a stand-in publisher (tests) that sends one at a time
            for encoded, queue, options in items:
                publisher.publish(encoded, queue, **options)
        self.sent += len(items)
        for message, queue in messages:
            sent(message, queue)

    def discard(self) -> None:
        self._messages, self._items = [], []


#: the batch that ``send`` adds to while a ``publishing_batch`` block runs in this context
current_batch: ContextVar[PendingBatch | None] = ContextVar("tasks_q_batch", default=None)


@contextmanager
def publishing_batch(chunk: int = DEFAULT_CHUNK) -> Iterator[PendingBatch]:
    """Publish the tasks sent in this block together, when it ends.

    Results (``AsyncResult``) are returned at once, but the messages reach the broker
    only at the end of the block (or every ``chunk`` messages), so do not wait on a
    result inside it.  If the block raises, messages not yet published are dropped.
    A nested block joins the outer one.
    """
    outer = current_batch.get()
    if outer is not None:
        yield outer
        return
    batch = PendingBatch(chunk)
    token = current_batch.set(batch)
    try:
        yield batch
    except BaseException:
        batch.discard()
        raise
    finally:
        current_batch.reset(token)
    batch.flush()


def apply_async_many(
    task: Task,
    calls: Iterable[tuple[Any, ...] | list[Any] | tuple[tuple | list, dict[str, Any]]],
    *,
    chunk: int = DEFAULT_CHUNK,
    **options: Any,
) -> list[AsyncResult]:
    """Send ``task`` once per item of ``calls``: ``(args, kwargs)`` pairs; ``options`` apply to all."""
    with publishing_batch(chunk):
        return [task.apply_async(args, kwargs, **options) for args, kwargs in calls]


def delay_many(
    task: Task, calls: Iterable[tuple[Any, ...] | list[Any]], *, chunk: int = DEFAULT_CHUNK
) -> list[AsyncResult]:
    """``task.delay(*args)`` for each ``args`` in ``calls``, published in batches."""
    with publishing_batch(chunk):
        return [task.apply_async(args) for args in calls]
