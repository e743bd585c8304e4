"""Results of several tasks: ``ResultSet`` and the ``GroupResult`` of a ``group``.

Waiting on a set first fetches every member's state in one store round trip, then
waits on the members still running, in order, within one overall timeout.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

from . import states
from .exceptions import TimeoutError
from .result import AsyncResult, store_or_default
from .result_waiting import assert_will_not_block, deadline_after, seconds_left
from .results.base import ResultStore


class ResultSet:
    """Several results handled together; ``get()`` returns their values in order."""

    def __init__(
        self, results: Sequence[AsyncResult] | None = None, backend: ResultStore | None = None
    ) -> None:
        self.results: list[Any] = list(results or [])
        self._backend = backend

    @property
    def backend(self) -> ResultStore:
        return store_or_default(self._backend)

    @property
    def children(self) -> list[Any]:
        return self.results

    def _states(self) -> list[str | None]:
        """Each member's state (None for nested sets), fetching unknown ones in one round trip."""
        pending = [
            r
            for r in self.results
            if type(r) is AsyncResult and r._cache is None and r._backend in (None, self._backend)
        ]
        metas = self.backend.get_many_meta([r.id for r in pending]) if pending else {}
        for r in pending:
            r._set_meta(metas[r.id])
        found: list[str | None] = []
        for r in self.results:
            if isinstance(r, ResultSet):
                found.append(None)
            elif r.id in metas and type(r) is AsyncResult:
                found.append(metas[r.id]["status"])
            else:
                found.append(r.state)
        return found

    def _each(self, test: Callable[[Any], bool], states_ok: frozenset[str]) -> list[bool]:
        return [
            test(r) if s is None else s in states_ok
            for s, r in zip(self._states(), self.results, strict=True)
        ]

    def ready(self) -> bool:
        return all(self._each(lambda r: r.ready(), states.READY_STATES))

    def successful(self) -> bool:
        return all(self._each(lambda r: r.successful(), frozenset({states.SUCCESS})))

    def failed(self) -> bool:
        return any(self._each(lambda r: r.failed(), frozenset({states.FAILURE})))

    def waiting(self) -> bool:
        return not self.ready()

    def completed_count(self) -> int:
        """How many members finished successfully."""
        return sum(self._each(lambda r: r.successful(), frozenset({states.SUCCESS})))

    def revoke(self, terminate: bool = False, signal: str = "SIGTERM", **kwargs: Any) -> None:
        for r in self.results:
            r.revoke(terminate=terminate, signal=signal)

    def forget(self) -> None:
        for r in self.results:
            r.forget()

    def join(
        self,
        timeout: float | None = None,
        propagate: bool = True,
        interval: float = 0.5,
        disable_sync_subtasks: bool = True,
        on_message: Callable[[dict[str, Any]], None] | None = None,
        callback: Callable[[str, Any], None] | None = None,
    ) -> list[Any]:
        """Values of every member in order; ``timeout`` bounds the whole wait."""
        if disable_sync_subtasks:
            assert_will_not_block()
        deadline = deadline_after(timeout)
        self._states()  # one round trip caches every member that is already done
        values = []
        for r in self.results:
            remaining = seconds_left(deadline)
            if remaining is not None and remaining <= 0 and not r.ready():
                raise TimeoutError(f"Timed out after {timeout}s waiting for {r!r} in {self!r}.")
            value = r.get(
                timeout=None if remaining is None else max(remaining, 0.0),
                propagate=propagate,
                interval=interval,
                disable_sync_subtasks=False,
                on_message=on_message,
            )
            if callback is not None:
                callback(r.id, value)
            values.append(value)
        return values

    get = join

    def __len__(self) -> int:
        return len(self.results)

    def __iter__(self) -> Iterator[Any]:
        return iter(self.results)

    def __getitem__(self, index: int) -> Any:
        return self.results[index]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ResultSet):
            return other.results == self.results
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: [{', '.join(r.id for r in self.results)}]>"


class GroupResult(ResultSet):
    """The results of a ``group``, under the group's id; can be saved and restored."""

    def __init__(
        self,
        id: str | None = None,  # noqa: A002
        results: Sequence[AsyncResult] | None = None,
        parent: AsyncResult | None = None,
        backend: ResultStore | None = None,
    ) -> None:
        super().__init__(results, backend)
        self.id = id
        self.parent = parent

    def save(self, backend: ResultStore | None = None) -> GroupResult:
        (backend or self.backend).save_group(self.id, [r.id for r in self.results])
        return self

    def delete(self, backend: ResultStore | None = None) -> None:
        (backend or self.backend).delete_group(self.id)

    def forget(self) -> None:
        super().forget()
        self.delete()

    @classmethod
    def restore(cls, id: str, backend: ResultStore | None = None) -> GroupResult | None:  # noqa: A002
        """The group saved under ``id``, or None."""
        ids = store_or_default(backend).restore_group(id)
        if ids is None:
            return None
        return cls(id, [AsyncResult(i, backend=backend) for i in ids], backend=backend)

    def as_tuple(self) -> tuple:
        parent = self.parent.as_tuple() if self.parent is not None else None
        return ((self.id, parent), [r.as_tuple() for r in self.results])

    def __eq__(self, other: object) -> bool:
        if isinstance(other, GroupResult):
            return other.id == self.id and other.results == self.results
        if isinstance(other, str):
            return other == self.id
        return NotImplemented

    def __hash__(self) -> int:  # type: ignore[override]  # hashable again, by id
        return hash(self.id)

    def __repr__(self) -> str:
        return f"<GroupResult: {self.id} [{', '.join(r.id for r in self.results)}]>"

    def __reduce__(self) -> tuple:
        return GroupResult, (self.id, self.results, self.parent)
