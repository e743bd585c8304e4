"""``Task``: the options of a task, and calling it (``__call__``, ``delay``,
``apply_async``...). The ``@task`` decorator that builds one lives in
:mod:`django_tasks_q.task_decorator` and is importable from here too.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar

from django.db import transaction

from . import _state
from .conf import settings
from .exceptions import MaxRetriesExceededError, Retry
from .message import new_id
from .request import Request
from .task_decorator import register_task_class, task
from .task_options import (
    TASK_OPTIONS,
    SettingDefault,
    check_arguments,
    reject_unknown_options,
    validate_options,
)

if TYPE_CHECKING:
    from .canvas import Signature
    from .eagerresult import EagerResult
    from .result import AsyncResult

__all__ = ["TASK_OPTIONS", "Task", "register_task_class", "task"]

P = ParamSpec("P")
R = TypeVar("R")


class Task(Generic[P, R]):
    """A task. Subclass it for shared behaviour; class attributes are defaults.

    ``__init__`` runs once per process, so a task may cache a resource on ``self``.
    """

    name: str = ""
    typing: bool = True
    max_retries: int | None = SettingDefault("MAX_RETRIES")  # type: ignore[assignment]
    default_retry_delay: float = SettingDefault("DEFAULT_RETRY_DELAY")  # type: ignore[assignment]
    autoretry_for: tuple[type[BaseException], ...] = ()
    dont_autoretry_for: tuple[type[BaseException], ...] = ()
    retry_kwargs: dict[str, Any] = {}
    retry_backoff: bool | float = False
    retry_backoff_max: float = 600
    retry_jitter: bool = True
    ignore_result: bool | None = None
    store_errors_even_if_ignored: bool = False
    acks_late: bool | None = None
    acks_on_failure_or_timeout: bool = True
    reject_on_worker_lost: bool | None = None
    track_started: bool | None = None
    time_limit: float | None = None
    soft_time_limit: float | None = None
    rate_limit: str | None = None
    expires: float | datetime | None = None
    queue: str | None = None
    routing_key: str | None = None
    priority: int | None = None
    serializer: str | None = None

    _fun: Callable[..., Any] | None = None
    _bind: bool = False

    # -- construction ------------------------------------------------------
    def _configure(
        self, fun: Callable[..., Any] | None, name: str | None, bind: bool, options: dict
    ) -> None:
        self._fun = fun
        self._bind = bind
        for key, value in options.items():
            setattr(self, key, value)
        if name:
            self.name = name
        elif not self.name:
            source = fun or type(self)
            self.name = f"{source.__module__}.{source.__qualname__}"
        if fun is not None:
            self.__doc__ = fun.__doc__
            self.__name__ = fun.__name__
            self.__qualname__ = fun.__qualname__
            self.__module__ = fun.__module__
            self.__wrapped__ = fun
        validate_options(self)

    def run(self, *args: Any, **kwargs: Any) -> Any:
        if self._fun is None:
            raise NotImplementedError(f"{type(self).__name__} must define run()")
        if self._bind:
            return self._fun(self, *args, **kwargs)
        return self._fun(*args, **kwargs)

    # -- effective options (task option, else setting) ----------------------
    @property
    def effective_ignore_result(self) -> bool:
        return settings.IGNORE_RESULT if self.ignore_result is None else bool(self.ignore_result)

    @property
    def effective_acks_late(self) -> bool:
        return settings.ACKS_LATE if self.acks_late is None else bool(self.acks_late)

    @property
    def effective_track_started(self) -> bool:
        return settings.TRACK_STARTED if self.track_started is None else bool(self.track_started)

    @property
    def is_async(self) -> bool:
        fun = self._fun if self._fun is not None else type(self).run
        return inspect.iscoroutinefunction(fun)

    # -- calling -----------------------------------------------------------
    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run the task inline, in this process, like calling the function."""
        token = _state.current_request.set(
            Request(task=self.name, args=list(args), kwargs=dict(kwargs), called_directly=True)
        )
        try:
            result = self.run(*args, **kwargs)
            if inspect.isawaitable(result):
                from .execution import run_coroutine

                result = run_coroutine(result)
            return result
        finally:
            _state.current_request.reset(token)

    @property
    def request(self) -> Request:
        req = _state.current_request.get()
        if req is None or (req.task and req.task != self.name):
            return Request(task=self.name)
        return req

    def delay(self, *args: P.args, **kwargs: P.kwargs) -> AsyncResult:
        """Enqueue the task with these arguments; return its AsyncResult."""
        return self.apply_async(args, kwargs)

    def apply_async(
        self,
        args: tuple | list | None = None,
        kwargs: dict[str, Any] | None = None,
        *,
        task_id: str | None = None,
        countdown: float | None = None,
        eta: datetime | None = None,
        expires: float | datetime | None = None,
        queue: str | None = None,
        routing_key: str | None = None,
        priority: int | None = None,
        serializer: str | None = None,
        headers: dict[str, Any] | None = None,
        link: Signature | list[Signature] | None = None,
        link_error: Signature | list[Signature] | None = None,
        ignore_result: bool | None = None,
        retry: bool | None = None,
        retry_policy: dict[str, Any] | None = None,
        shadow: str | None = None,
        **options: Any,
    ) -> AsyncResult:
        """Enqueue with options; the same keywords as Celery's ``apply_async``."""
        from .calling import send

        reject_unknown_options(self.name, options)
        args = list(args or ())
        kwargs = dict(kwargs or {})
        if self.typing:
            check_arguments(self, args, kwargs)
        if settings.ALWAYS_EAGER:
            return self.apply(
                args, kwargs, task_id=task_id, link=link, link_error=link_error, headers=headers,
                **{k: v for k, v in options.items() if k in ("group_id", "group_index", "parent_id", "root_id", "chain", "chord")},
            )  # fmt: skip
        return send(
            self.name,
            args,
            kwargs,
            task=self,
            task_id=task_id,
            countdown=countdown,
            eta=eta,
            expires=expires,
            queue=queue,
            routing_key=routing_key,
            priority=priority,
            serializer=serializer,
            headers=headers,
            link=link,
            link_error=link_error,
            ignore_result=ignore_result,
            retry=retry,
            retry_policy=retry_policy,
            shadow=shadow,
            **options,
        )

    def delay_on_commit(self, *args: P.args, **kwargs: P.kwargs) -> AsyncResult:
        """Enqueue after the surrounding transaction commits; return the AsyncResult now."""
        return self.apply_async_on_commit(args, kwargs)

    def apply_async_on_commit(
        self, args: tuple | list | None = None, kwargs: dict[str, Any] | None = None, **options: Any
    ) -> AsyncResult:
        from .result import AsyncResult

        task_id = options.pop("task_id", None) or new_id()
        using = options.pop("using", None) or settings.DATABASE_ALIAS
        args, kwargs = list(args or ()), dict(kwargs or {})
        if self.typing:
            check_arguments(self, args, kwargs)
        transaction.on_commit(
            lambda: self.apply_async(args, kwargs, task_id=task_id, **options), using=using
        )
        return AsyncResult(task_id, task_name=self.name)

    def delay_many(self, calls: Iterable[tuple | list], *, chunk: int = 1000) -> list[AsyncResult]:
        """``delay(*args)`` for each args tuple in ``calls``, published in batches
        (one pipeline on Redis, one transaction on ``django://``): see ``bulk.py``."""
        from .bulk import delay_many

        return delay_many(self, calls, chunk=chunk)

    def apply_async_many(
        self,
        calls: Iterable[tuple[tuple | list, dict[str, Any]]],
        *,
        chunk: int = 1000,
        **options: Any,
    ) -> list[AsyncResult]:
        """``apply_async(args, kwargs, **options)`` for each ``(args, kwargs)`` in ``calls``, in batches."""
        from .bulk import apply_async_many

        return apply_async_many(self, calls, chunk=chunk, **options)

    def apply(
        self,
        args: tuple | list | None = None,
        kwargs: dict[str, Any] | None = None,
        *,
        task_id: str | None = None,
        throw: bool | None = None,
        **options: Any,
    ) -> EagerResult:
        """Run the task in this process, through the same tracer as a worker."""
        from .execution import apply_eager

        return apply_eager(
            self, list(args or ()), dict(kwargs or {}), task_id=task_id, throw=throw, **options
        )

    # -- inside a task -----------------------------------------------------
    def retry(
        self,
        args: tuple | list | None = None,
        kwargs: dict[str, Any] | None = None,
        exc: BaseException | None = None,
        throw: bool = True,
        eta: datetime | None = None,
        countdown: float | None = None,
        max_retries: int | None = None,
        **options: Any,
    ) -> Retry:
        """Schedule this task to run again; ``raise self.retry(...)`` from the task body."""
        from .calling import send_retry

        request = self.request
        max_retries = self.max_retries if max_retries is None else max_retries
        if request.called_directly:
            if exc is not None:
                raise exc
            raise RuntimeError(f"Task {self.name!r} was called directly, so it cannot be retried")
        if max_retries is not None and request.retries >= max_retries:
            if exc is not None:
                raise exc
            raise MaxRetriesExceededError(
                f"Can't retry {self.name}[{request.id}] args:{request.args} "
                f"kwargs:{request.kwargs}: max_retries={max_retries} reached"
            )
        if eta is None and countdown is None:
            countdown = self.default_retry_delay
        when = eta or countdown
        sig = send_retry(self, request, args, kwargs, eta=eta, countdown=countdown, **options)
        ret = Retry(exc=exc, when=when, is_eager=request.is_eager, sig=sig)
        if throw:
            raise ret
        return ret

    def update_state(
        self, task_id: str | None = None, state: str | None = None, meta: Any = None, **kwargs: Any
    ) -> None:
        """Record a custom state (``PROGRESS``...) and its meta; observers are told."""
        from .results import get_store
        from .signals import task_state_updated

        request = self.request
        task_id = task_id or request.id
        if task_id is None:
            raise RuntimeError("update_state() needs a task_id outside a running task")
        get_store().update_state(task_id, state, meta, request=request)
        task_state_updated.send(
            sender=self, task_id=task_id, request=request, state=state, meta=meta
        )

    def AsyncResult(self, task_id: str, **kwargs: Any) -> AsyncResult:  # noqa: N802 (Celery's name)
        from .result import AsyncResult

        return AsyncResult(task_id, task_name=self.name, **kwargs)

    # -- signatures --------------------------------------------------------
    def signature(
        self, args: tuple | list | None = None, kwargs: dict | None = None, **options: Any
    ) -> Signature:
        from .canvas import Signature

        return Signature(self.name, args, kwargs, options=options, task_obj=self)

    subtask = signature

    def s(self, *args: Any, **kwargs: Any) -> Signature:
        return self.signature(args, kwargs)

    def si(self, *args: Any, **kwargs: Any) -> Signature:
        return self.signature(args, kwargs, immutable=True)

    def map(self, it: Any) -> Any:
        from .canvas import xmap

        return xmap(self.s(), it)

    def starmap(self, it: Any) -> Any:
        from .canvas import xstarmap

        return xstarmap(self.s(), it)

    def chunks(self, it: Any, n: int) -> Any:
        from .canvas import chunks

        return chunks(self.s(), it, n)

    # -- hooks (override in a subclass) -------------------------------------
    def before_start(self, task_id: str, args: list, kwargs: dict) -> None:
        """Called in the worker before the task body runs."""

    def on_success(self, retval: Any, task_id: str, args: list, kwargs: dict) -> None:
        """Called after the task body returned."""

    def on_failure(
        self, exc: BaseException, task_id: str, args: list, kwargs: dict, einfo: Any
    ) -> None:
        """Called after the task body raised (and was not retried)."""

    def on_retry(
        self, exc: BaseException, task_id: str, args: list, kwargs: dict, einfo: Any
    ) -> None:
        """Called when the task is to be retried."""

    def after_return(
        self, status: str, retval: Any, task_id: str, args: list, kwargs: dict, einfo: Any
    ) -> None:
        """Called after any outcome, once the state is stored."""

    def __repr__(self) -> str:
        return f"<@task: {self.name}>"

    def __reduce__(self) -> tuple[Any, ...]:
        return (_task_by_name, (self.name,))


def _task_by_name(name: str) -> Task:
    from .registry import tasks

    return tasks[name]
