"""The delayed store (DESIGN D4): messages whose ETA is beyond the horizon.

A sorted set scores each member (``<task id>|<eta header>``) by its ETA; a hash
holds the message and where it goes.  Publishing the same task id for the same
ETA twice stores it once.  Consumers move due members to the head of their
queues inside the claim script, so a move happens exactly once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from . import keys, scripts
from .payload import Eta, decode


def entry(list_key: str, wake_key: str, data: str | bytes) -> bytes:
    if isinstance(data, str):
        data = data.encode()
    return b"%s\n%s\n%s" % (list_key.encode(), wake_key.encode(), data)


def schedule_args(
    eta: Eta, list_key: str, wake_key: str, data: str | bytes, inflight: str = "", tag: str = ""
) -> tuple[list[str], list[Any]]:
    """KEYS and ARGV of :data:`scripts.SCHEDULE` for one message."""
    return (
        [keys.DELAYED, keys.DELAYED_MESSAGES, wake_key, inflight or keys.DELAYED],
        [eta.member, repr(eta.timestamp), entry(list_key, wake_key, data), tag],
    )


@dataclass(frozen=True)
class ScheduledMessage:
    """One message waiting in the delayed store, for listings (admin, inspect)."""

    task_id: str
    eta: datetime
    queue: str
    task: str | None
    headers: dict[str, Any]
    member: str


class DelayedStore:
    """Read and revoke delayed messages through a redis-py client."""

    def __init__(self, client: Any, sep: str) -> None:
        self.client = client
        self.sep = sep

    def count(self) -> int:
        return int(self.client.zcard(keys.DELAYED))

    def list(self, start: int = 0, count: int = 100) -> list[ScheduledMessage]:
        """Delayed messages in ETA order, ``count`` of them from position ``start``."""
        if count <= 0:
            return []
        members = self.client.zrange(keys.DELAYED, start, start + count - 1, withscores=True)
        if not members:
            return []
        entries = self.client.hmget(keys.DELAYED_MESSAGES, [m for m, _ in members])
        listed = []
        for (member, score), value in zip(members, entries, strict=True):
            if value is None:
                continue  # moved to its queue meanwhile
            list_key, _, rest = value.partition(b"\n")
            _, _, raw = rest.partition(b"\n")
            payload = decode(raw) or {}
            headers = payload.get("headers") if isinstance(payload.get("headers"), dict) else {}
            name = member.decode()
            listed.append(
                ScheduledMessage(
                    task_id=name.rsplit("|", 1)[0],
                    eta=datetime.fromtimestamp(score, tz=UTC),
                    queue=keys.queue_of(list_key.decode(), self.sep),
                    task=headers.get("task"),
                    headers=headers,
                    member=name,
                )
            )
        return listed

    def remove(self, task_id: str) -> int:
        """Remove every delayed message of ``task_id``; return how many were removed."""
        pattern = _glob_escape(task_id) + "|*"
        members = [
            member
            for member, _ in self.client.hscan_iter(
                keys.DELAYED_MESSAGES, match=pattern, count=1000
            )
            if member.decode().rsplit("|", 1)[0] == task_id
        ]
        if not members:
            return 0
        return int(scripts.unschedule(self.client, [keys.DELAYED, keys.DELAYED_MESSAGES], members))


def _glob_escape(text: str) -> str:
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)
