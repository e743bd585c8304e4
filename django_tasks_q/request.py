"""``self.request``: what a bound task knows about the current execution."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .message import Message


@dataclass
class Request:
    id: str | None = None
    task: str | None = None
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    retries: int = 0
    eta: datetime | None = None
    expires: datetime | None = None
    root_id: str | None = None
    parent_id: str | None = None
    group: str | None = None
    group_index: int | None = None
    correlation_id: str | None = None
    reply_to: str | None = None
    origin: str | None = None
    hostname: str | None = None
    delivery_info: dict[str, Any] = field(default_factory=dict)
    is_eager: bool = False
    called_directly: bool = True
    timelimit: tuple[float | None, float | None] = (None, None)
    callbacks: list[dict] | None = None
    errbacks: list[dict] | None = None
    chain: list[dict] | None = None
    chord: dict | None = None
    ignore_result: bool = False
    shadow: str | None = None
    headers: dict[str, Any] = field(default_factory=dict)
    periodic_task_name: str | None = None
    delivery_count: int = 1
    children: list[Any] = field(default_factory=list)
    message: Message | None = None

    @classmethod
    def from_message(
        cls,
        message: Message,
        *,
        hostname: str | None = None,
        delivery_info: dict[str, Any] | None = None,
        is_eager: bool = False,
        delivery_count: int = 1,
    ) -> Request:
        return cls(
            id=message.id,
            task=message.task,
            args=message.args,
            kwargs=message.kwargs,
            retries=message.retries,
            eta=message.eta,
            expires=message.expires,
            root_id=message.root_id,
            parent_id=message.parent_id,
            group=message.group,
            group_index=message.group_index,
            correlation_id=message.correlation_id or message.id,
            reply_to=message.reply_to,
            origin=message.origin,
            hostname=hostname,
            delivery_info=dict(delivery_info or {}),
            is_eager=is_eager,
            called_directly=False,
            timelimit=message.timelimit,
            callbacks=message.callbacks,
            errbacks=message.errbacks,
            chain=message.chain,
            chord=message.chord,
            ignore_result=message.ignore_result,
            shadow=message.shadow,
            headers=dict(message.extra_headers),
            periodic_task_name=message.extra_headers.get("periodic_task_name"),
            delivery_count=delivery_count,
            message=message,
        )

    @property
    def redelivered(self) -> bool:
        return bool(self.delivery_info.get("redelivered")) or self.delivery_count > 1

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key, default)
