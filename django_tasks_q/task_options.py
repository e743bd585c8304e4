"""Task options: what ``@task`` and ``apply_async`` accept, and how they are checked.

Checks run when the decorator runs, so a wrong option fails at import, not at 3 a.m.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from .conf import settings
from .exceptions import ImproperlyConfiguredTask

if TYPE_CHECKING:
    from .task import Task

#: Options @task accepts, with Celery's meanings (besides name, bind and base).
TASK_OPTIONS = frozenset(
    {
        "queue", "priority", "serializer", "max_retries", "default_retry_delay",
        "autoretry_for", "dont_autoretry_for", "retry_kwargs", "retry_backoff",
        "retry_backoff_max", "retry_jitter", "ignore_result", "acks_late",
        "reject_on_worker_lost", "track_started", "time_limit", "soft_time_limit",
        "rate_limit", "expires", "typing", "store_errors_even_if_ignored", "routing_key",
        "acks_on_failure_or_timeout",
    }
)  # fmt: skip

APPLY_OPTIONS = frozenset(
    {
        "exchange", "group_id", "group_index", "parent_id", "root_id", "chain", "chord",
        "reply_to", "correlation_id", "time_limit", "soft_time_limit", "add_to_parent",
        "periodic_task_name", "delivery_mode", "stamped_headers", "stamps", "connection",
        "producer", "publisher", "mandatory", "immediate", "compression", "argsrepr",
        "kwargsrepr",
    }
)  # fmt: skip


class SettingDefault:
    """A task attribute whose default is read from ``TASKS_Q`` on access, not at import.

    A value set on the task (``@task(max_retries=5)``) or on a subclass
    (``max_retries = 5``) wins; otherwise the current setting applies.
    """

    def __init__(self, key: str) -> None:
        self.key = key
        self.attr = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.attr = name

    def __get__(self, obj: Any, objtype: Any = None) -> Any:
        if obj is not None and self.attr in obj.__dict__:
            return obj.__dict__[self.attr]
        return getattr(settings, self.key)

    def __set__(self, obj: Any, value: Any) -> None:
        obj.__dict__[self.attr] = value


def validate_options(t: Task) -> None:
    name = t.name
    for attr in ("autoretry_for", "dont_autoretry_for"):
        value = getattr(t, attr)
        if isinstance(value, type):
            value = (value,)
            setattr(t, attr, value)
        if not isinstance(value, list | tuple) or not all(
            isinstance(e, type) and issubclass(e, BaseException) for e in value
        ):
            raise ImproperlyConfiguredTask(
                f"Task {name!r}: {attr} must be a tuple of exception classes, got {value!r}"
            )
        setattr(t, attr, tuple(value))
    if t.priority is not None and not (isinstance(t.priority, int) and 0 <= t.priority <= 9):
        raise ImproperlyConfiguredTask(
            f"Task {name!r}: priority must be an int 0-9, got {t.priority!r}"
        )
    if t.rate_limit is not None:
        from .ratelimit import parse_rate

        try:
            parse_rate(t.rate_limit)
        except ValueError as exc:
            raise ImproperlyConfiguredTask(f"Task {name!r}: {exc}") from None
    if t.serializer is not None:
        from .serialization import content_type_of

        try:
            content_type_of(t.serializer)
        except Exception as exc:
            raise ImproperlyConfiguredTask(f"Task {name!r}: {exc}") from None
    for attr in ("time_limit", "soft_time_limit", "default_retry_delay", "retry_backoff_max"):
        value = getattr(t, attr)
        if value is not None and (not isinstance(value, int | float) or value < 0):
            raise ImproperlyConfiguredTask(
                f"Task {name!r}: {attr} must be a non-negative number of seconds, got {value!r}"
            )
    if t.max_retries is not None and (not isinstance(t.max_retries, int) or t.max_retries < 0):
        raise ImproperlyConfiguredTask(
            f"Task {name!r}: max_retries must be a non-negative int or None, got {t.max_retries!r}"
        )


def reject_unknown_options(name: str, options: dict[str, Any]) -> None:
    unknown = [k for k in options if k not in APPLY_OPTIONS]
    if unknown:
        key = unknown[0]
        valid = sorted(APPLY_OPTIONS | {"task_id", "countdown", "eta", "expires", "queue", "routing_key", "priority", "serializer", "headers", "link", "link_error", "ignore_result", "retry", "retry_policy", "shadow"})  # fmt: skip
        hint = did_you_mean(key, valid)
        raise TypeError(f"apply_async() of task {name!r} got an unexpected option {key!r}.{hint}")


def did_you_mean(key: str, choices: Iterable[str]) -> str:
    """`` Did you mean 'x'?`` naming the choice closest to ``key``, or an empty string."""
    near = difflib.get_close_matches(key, sorted(choices), n=1)
    return f" Did you mean {near[0]!r}?" if near else ""


def check_arguments(t: Task, args: list, kwargs: dict) -> None:
    """Raise TypeError naming the task when args do not fit its signature."""
    fun = t._fun if t._fun is not None else t.run
    cached = t.__dict__.get("_checked_signature")
    if cached is None or cached[0] is not getattr(fun, "__func__", fun):
        cached = t.__dict__["_checked_signature"] = _signature_of(t, fun)
    sig, positional = cached[1], cached[2]
    if sig is None:
        return
    if positional is not None and not kwargs and positional[0] <= len(args) <= positional[1]:
        return  # plain positional parameters, and a count that fits them
    try:
        if t._fun is not None and t._bind:
            sig.bind(t, *args, **kwargs)
        else:
            sig.bind(*args, **kwargs)
    except TypeError as exc:
        raise TypeError(f"Task {t.name!r} called with wrong arguments: {exc}") from None


def _signature_of(t: Task, fun: Any) -> tuple[Any, Any, tuple[int, int] | None]:
    """``(function, signature or None, (min, max) positional count or None)``, cached per task."""
    try:
        sig = inspect.signature(fun)
    except (TypeError, ValueError):
        return (getattr(fun, "__func__", fun), None, None)
    params = list(sig.parameters.values())
    plain = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    positional = None
    bound = t._fun is not None and t._bind
    if bound and params and params[0].kind in plain:
        params = params[1:]
    elif bound:
        params = [None]  # the task takes no ``self`` slot: leave it to ``bind``
    if all(p is not None and p.kind in plain for p in params):
        required = sum(1 for p in params if p.default is inspect.Parameter.empty)
        positional = (required, len(params))
    return (getattr(fun, "__func__", fun), sig, positional)


def eta_from(countdown: float | None, eta: datetime | None) -> datetime | None:
    if eta is not None:
        return eta if eta.tzinfo else eta.replace(tzinfo=UTC)
    if countdown is not None:
        return datetime.now(UTC) + timedelta(seconds=countdown)
    return None


def expires_from(expires: float | datetime | timedelta | None) -> datetime | None:
    if expires is None:
        return None
    if isinstance(expires, datetime):
        return expires if expires.tzinfo else expires.replace(tzinfo=UTC)
    if isinstance(expires, timedelta):
        return datetime.now(UTC) + expires
    return datetime.now(UTC) + timedelta(seconds=float(expires))
