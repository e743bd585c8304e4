"""``control.inspect()``: read-only questions to workers, answered ``{hostname: reply}``."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .client import Control


def flatten_replies(replies: Iterable[dict[str, Any]] | None) -> dict[str, Any]:
    """``[{"a@h": 1}, {"b@h": 2}]`` -> ``{"a@h": 1, "b@h": 2}``; warn on duplicate names."""
    by_node: dict[str, Any] = {}
    for item in replies or ():
        for name, value in item.items():
            if name in by_node:
                warnings.warn(
                    f"Two workers answered as {name!r}: give each worker a unique name "
                    "(runworker --hostname).",
                    RuntimeWarning,
                    stacklevel=3,
                )
            by_node[name] = value
    return by_node


class Inspect:
    """Each method broadcasts one inspect command and returns ``{hostname: reply}``.

    Workers that do not answer within ``timeout`` are missing from the dict; an
    empty dict means nobody answered.
    """

    def __init__(
        self,
        control: Control,
        destination: str | Iterable[str] | None = None,
        timeout: float = 1.0,
        limit: int | None = None,
        callback: Callable[[dict], None] | None = None,
        pattern: str | None = None,
        matcher: str | None = None,
    ) -> None:
        self.control = control
        self.destination = destination
        self.timeout = timeout
        self.limit = limit
        self.callback = callback
        self.pattern = pattern
        self.matcher = matcher

    def _request(self, command: str, **arguments: Any) -> dict[str, Any]:
        replies = self.control.broadcast(
            command,
            arguments,
            destination=self.destination,
            reply=True,
            timeout=self.timeout,
            limit=self.limit,
            callback=self.callback,
            pattern=self.pattern,
            matcher=self.matcher,
        )
        return flatten_replies(replies)

    def active(self, safe: bool | None = None) -> dict[str, Any]:
        """Tasks running now: ``{hostname: [task info, ...]}``."""
        return self._request("active", safe=safe)

    def reserved(self, safe: bool | None = None) -> dict[str, Any]:
        """Tasks prefetched and waiting for a free slot (not running, not scheduled)."""
        return self._request("reserved")

    def scheduled(self, safe: bool | None = None) -> dict[str, Any]:
        """Tasks with an ETA held by the worker: ``[{"eta", "priority", "request"}, ...]``."""
        return self._request("scheduled")

    def registered(self, *taskinfoitems: str) -> dict[str, Any]:
        """Task names each worker knows."""
        return self._request("registered", taskinfoitems=list(taskinfoitems) or None)

    registered_tasks = registered

    def stats(self) -> dict[str, Any]:
        """Worker statistics (pid, pool, totals per task, uptime...)."""
        return self._request("stats")

    def ping(self, destination: str | Iterable[str] | None = None) -> dict[str, Any]:
        """``{hostname: {"ok": "pong"}}`` for every worker that answered."""
        if destination:
            self.destination = destination
        return self._request("ping")

    def revoked(self) -> dict[str, Any]:
        """Revoked task ids each worker honours."""
        return self._request("revoked")

    def active_queues(self) -> dict[str, Any]:
        """The queues each worker consumes from."""
        return self._request("active_queues")
