"""A received message on its way through one worker process."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..request import Request
    from ..task import Task


@dataclass(eq=False)
class Job:
    """One task message: the raw kombu message, the request built from it, its task."""

    raw: Any  # kombu.Message
    request: Request
    task: Task
    queue: str
    acks_late: bool
    received: float = field(default_factory=time.monotonic)
    acked: bool = False
    started: float | None = None
    held_reason: str | None = None  # "eta" or "rate" while held

    @property
    def id(self) -> str:
        return self.request.id or ""

    @property
    def name(self) -> str:
        return self.task.name

    def summary(self) -> dict[str, Any]:
        """What ``inspect active/reserved/scheduled`` shows for this job."""
        request = self.request
        message = request.message
        return {
            "id": request.id,
            "name": self.task.name,
            "args": request.args,
            "kwargs": request.kwargs,
            "argsrepr": getattr(message, "argsrepr", None),
            "kwargsrepr": getattr(message, "kwargsrepr", None),
            "type": self.task.name,
            "hostname": request.hostname,
            "time_start": None
            if self.started is None
            else time.time() - (time.monotonic() - self.started),
            "acknowledged": self.acked,
            "delivery_info": {
                "exchange": request.delivery_info.get("exchange"),
                "routing_key": request.delivery_info.get("routing_key"),
                "priority": request.delivery_info.get("priority"),
                "redelivered": bool(request.delivery_info.get("redelivered")),
            },
            "eta": request.eta.isoformat() if request.eta else None,
            "retries": request.retries,
        }

    def slot_info(self) -> dict[str, Any]:
        """What the prefork supervisor shows of this job while it runs (``inspect active``)."""
        message = self.request.message
        return {
            "argsrepr": (getattr(message, "argsrepr", None) or repr(self.request.args))[:300],
            "kwargsrepr": (getattr(message, "kwargsrepr", None) or repr(self.request.kwargs))[:300],
            "routing_key": self.request.delivery_info.get("routing_key"),
            "redelivered": self.request.redelivered,
        }
