"""``EagerResult``: the outcome of a task run in this process, known at once."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.utils import timezone

from . import states
from .exceptions import TaskRevokedError
from .result import AsyncResult
from .results.base import empty_meta
from .results.errors import exception_from_dict


class EagerResult(AsyncResult):
    """The outcome of a task run in this process (``apply()``, ``ALWAYS_EAGER``): already known."""

    def __init__(
        self,
        id: str,  # noqa: A002
        ret_value: Any,
        state: str,
        traceback: str | None = None,
        name: str | None = None,
        args: Any = None,
        kwargs: Any = None,
        retries: int = 0,
        parent: AsyncResult | None = None,
    ) -> None:
        super().__init__(id, task_name=name, parent=parent)
        self._state = state
        self._ret_value = ret_value
        self._meta = empty_meta(self.id)
        self._meta.update(
            status=state,
            traceback=traceback,
            name=name,
            args=args,
            kwargs=kwargs,
            retries=retries,
            date_done=timezone.now() if state in states.READY_STATES else None,
        )

    def _get_meta(self) -> dict[str, Any]:
        self._meta["status"] = self._state
        return self._meta

    def _value(self, meta: dict[str, Any]) -> Any:
        if self._state == states.REVOKED and not isinstance(self._ret_value, BaseException):
            return TaskRevokedError("revoked")
        return self._ret_value

    def _exception(self, meta: dict[str, Any]) -> BaseException:
        value = self._value(meta)
        if isinstance(value, BaseException):
            return value
        return exception_from_dict(value)

    def get(
        self,
        timeout: float | None = None,
        propagate: bool = True,
        interval: float = 0.5,
        disable_sync_subtasks: bool = True,
        on_message: Callable[[dict[str, Any]], None] | None = None,
        follow_parents: bool = True,
    ) -> Any:
        """Return the value, or raise its exception (never blocks, so allowed in tasks)."""
        meta = self._get_meta()
        if on_message is not None:
            on_message(meta)
        if self._state in states.PROPAGATE_STATES:
            exc = self._exception(meta)
            if propagate:
                raise exc
            return exc
        return self._ret_value

    wait = get

    def forget(self) -> None:
        return None

    def revoke(self, *args: Any, **kwargs: Any) -> None:
        self._state = states.REVOKED

    def __reduce__(self) -> tuple:
        m = self._meta
        return EagerResult, (
            self.id,
            self._ret_value,
            self._state,
            m["traceback"],
            m["name"],
            m["args"],
            m["kwargs"],
            m["retries"],
            self.parent,
        )
