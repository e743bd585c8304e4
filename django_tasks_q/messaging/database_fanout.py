"""Fanout exchanges on ``django://``: one ``BroadcastMessage`` row per publish.

Each queue bound to a fanout exchange reads the exchange's rows above the
highest id that existed when it was bound. Ids are handed out at insert but
become visible at commit, so a row may appear below ids already read; a reader
therefore re-reads the last :data:`LOOKBACK` seconds and skips ids it has seen.
Rows expire after ``broadcast_retention`` seconds (see :func:`delete_expired`).
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.db.models import Max

from .database_sql import now, sqlite_retry

#: A broadcast committed later than this after its insert may be missed by readers.
LOOKBACK = 10.0
#: Rows read per query.
BATCH = 200


def _model():
    from ..models import BroadcastMessage

    return BroadcastMessage


@dataclass
class _Reader:
    exchange: str
    floor: int  # every row at or below this id is settled: read or skipped
    seen: set[int] = field(default_factory=set)
    buffer: deque[dict[str, Any]] = field(default_factory=deque)


class FanoutReader:
    """The fanout queues of one channel and where each has read up to."""

    def __init__(self, alias: str) -> None:
        self.alias = alias
        self._readers: dict[str, _Reader] = {}

    def __contains__(self, queue: str) -> bool:
        return queue in self._readers

    def exchanges(self) -> set[str]:
        return {r.exchange for r in self._readers.values()}

    def bind(self, queue: str, exchange: str) -> None:
        if queue in self._readers:
            return
        top = (
            _model()
            ._base_manager.using(self.alias)
            .filter(exchange=exchange)
            .aggregate(top=Max("id"))["top"]
        )
        self._readers[queue] = _Reader(exchange=exchange, floor=top or 0)

    def unbind(self, queue: str) -> None:
        self._readers.pop(queue, None)

    def clear(self) -> None:
        self._readers.clear()

    def get(self, queue: str) -> dict[str, Any] | None:
        """The next broadcast payload for ``queue``, or None."""
        reader = self._readers.get(queue)
        if reader is None:
            return None
        if not reader.buffer:
            self._fetch(reader)
        return reader.buffer.popleft() if reader.buffer else None

    def _fetch(self, reader: _Reader) -> None:
        rows = _model()._base_manager.using(self.alias).filter(exchange=reader.exchange)
        top = max(reader.seen, default=reader.floor)
        # Ids in (floor, top] we have not seen were committed late: read them too.
        window = (
            list(
                rows.filter(id__gt=reader.floor, id__lte=top)
                .order_by("id")
                .values_list("id", "created_at")
            )
            if top > reader.floor
            else []
        )
        missing = [row_id for row_id, _ in window if row_id not in reader.seen]
        late = (
            list(rows.filter(id__in=missing).order_by("id").values_list("id", "payload"))
            if missing
            else []
        )
        fresh = list(
            rows.filter(id__gt=top)
            .order_by("id")
            .values_list("id", "payload", "created_at")[:BATCH]
        )
        for row_id, payload in [*late, *((r[0], r[1]) for r in fresh)]:
            reader.seen.add(row_id)
            reader.buffer.append(json.loads(payload) if isinstance(payload, str) else payload)
        settled = now() - timedelta(seconds=LOOKBACK)
        for row_id, created in [*window, *((r[0], r[2]) for r in fresh)]:
            if created >= settled:
                break
            reader.floor = row_id
        reader.seen = {i for i in reader.seen if i > reader.floor}


def delete_expired(alias: str, retention: float) -> int:
    """Delete broadcasts older than ``retention`` seconds."""
    cutoff = now() - timedelta(seconds=retention)
    return sqlite_retry(
        alias,
        lambda: _model()._base_manager.using(alias).filter(created_at__lt=cutoff).delete()[0],
    )
