"""One exception hierarchy for the whole package."""

from __future__ import annotations

from typing import Any


class TasksQError(Exception):
    """Base class of every error raised by django_tasks_q."""


class ImproperlyConfiguredTask(TasksQError):
    """A task was declared with options that cannot work."""


class NotRegistered(TasksQError, KeyError):
    """No task of that name is registered in this process."""

    def __str__(self) -> str:
        return f"Task {self.args[0]!r} is not registered" if self.args else "Task not registered"


class DuplicateTaskName(ImproperlyConfiguredTask):
    """Two different functions were registered under one task name."""


class EncodeError(TasksQError):
    """Task arguments or a result could not be serialised."""


class DecodeError(TasksQError):
    """A message body could not be decoded."""


class ContentDisallowed(DecodeError):
    """A message used a content type that is not in ACCEPT_CONTENT."""


class MessageTooLarge(EncodeError):
    """An encoded message exceeded MESSAGE_MAX_SIZE."""


class InvalidMessage(DecodeError):
    """A message off the wire does not follow protocol v2."""


class PublishError(TasksQError):
    """The broker could not be reached to publish a message."""


class TimeoutError(TasksQError):  # noqa: A001 - Celery's name, on purpose
    """AsyncResult.get() gave up waiting."""


class TaskRevokedError(TasksQError):
    """The task was revoked and will not run."""


class WorkerLostError(TasksQError):
    """The process running a task died."""


class SoftTimeLimitExceeded(TasksQError):
    """Raised inside a task when its soft time limit passes."""


class TimeLimitExceeded(TasksQError):
    """The hard time limit passed and the task's process was killed."""


class MaxRetriesExceededError(TasksQError):
    """task.retry() was called past max_retries."""


class ChordError(TasksQError):
    """A member of a chord's header failed."""


class QueueNotFound(TasksQError, KeyError):
    """A task was routed to a queue that is not declared."""


class RuntimeWarningError(TasksQError):
    """A synchronous wait was attempted inside a task."""


class RemoteError(TasksQError):
    """A task failed with an exception this process cannot rebuild.

    The original type is not importable here (or is not an ``Exception`` subclass),
    so the stored failure comes back as this class, carrying the original names:
    ``exc_type`` (``"MyError"``), ``exc_module`` (``"myapp.errors"``) and the
    original ``args``.
    """

    def __init__(self, exc_type: str, exc_module: str | None = None, *args: Any) -> None:
        self.exc_type = exc_type
        self.exc_module = exc_module
        super().__init__(*args)

    def __str__(self) -> str:
        name = f"{self.exc_module}.{self.exc_type}" if self.exc_module else self.exc_type
        message = ", ".join(str(a) for a in self.args)
        return f"{name}: {message}" if message else name

    def __reduce__(self):
        return self.__class__, (self.exc_type, self.exc_module, *self.args)


class Retry(TasksQError):
    """Raised by ``task.retry()``: the task will run again."""

    def __init__(
        self,
        message: str | None = None,
        exc: BaseException | None = None,
        when: Any = None,
        is_eager: bool = False,
        sig: Any = None,
    ) -> None:
        self.message = message
        self.exc = exc
        self.when = when
        self.is_eager = is_eager
        self.sig = sig
        super().__init__(message or "Retry", exc, when)

    def humanize(self) -> str:
        when = self.when
        return f"in {when}s" if isinstance(when, int | float) else f"at {when}"

    def __str__(self) -> str:
        if self.message:
            return self.message
        if self.exc is not None:
            return f"Retry {self.humanize()}: {self.exc!r}"
        return f"Retry {self.humanize()}"

    def __reduce__(self):
        return self.__class__, (self.message, self.exc, self.when)


class Reject(TasksQError):
    """Raised by a task to reject its message, optionally requeueing it."""

    def __init__(self, reason: Any = None, requeue: bool = False) -> None:
        self.reason = reason
        self.requeue = requeue
        super().__init__(reason, requeue)

    def __repr__(self) -> str:
        return f"Reject({self.reason!r}, requeue={self.requeue})"


class Ignore(TasksQError):
    """Raised by a task to leave its state untouched and ack the message."""
