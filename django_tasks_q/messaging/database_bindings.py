"""Queue declarations and bindings shared through the ``QueueBinding`` table.

kombu's virtual transports keep exchanges and bindings in memory, per
connection. A process that publishes to an exchange it never bound (a pidbox
node replying to a client, a producer that did not declare the queue) would
route nowhere. Bindings are therefore written to the database, and routing
consults them (cached for :data:`CACHE_SECONDS`, re-read whenever nothing
matched) as well as the connection's own.
"""

from __future__ import annotations

import time

from .database_sql import sqlite_retry

#: How long a process trusts its copy of an exchange's bindings when one matched.
CACHE_SECONDS = 1.0


def _model():
    from ..models.broker import QueueBinding

    return QueueBinding


class SharedBindings:
    """Reads and writes the binding table on one database alias."""

    def __init__(self, alias: str) -> None:
        self.alias = alias
        # exchange -> (read at, exchange type or None, [(routing_key, queue)])
        self._cache: dict[str, tuple[float, str | None, list[tuple[str, str]]]] = {}

    def _rows(self):
        return _model()._base_manager.using(self.alias)

    def _ensure(self, queue: str, exchange: str, routing_key: str, exchange_type: str) -> None:
        rows = self._rows()
        if rows.filter(queue=queue, exchange=exchange, routing_key=routing_key).exists():
            return
        model = _model()
        sqlite_retry(
            self.alias,
            lambda: rows.bulk_create(
                [
                    model(
                        queue=queue,
                        exchange=exchange,
                        routing_key=routing_key,
                        exchange_type=exchange_type,
                    )
                ],
                ignore_conflicts=True,
            ),
        )

    def declare_queue(self, queue: str) -> None:
        self._ensure(queue, "", "", "direct")

    def bind(self, queue: str, exchange: str, routing_key: str, exchange_type: str) -> None:
        self._ensure(queue, exchange, routing_key or "", exchange_type)
        self._cache.pop(exchange, None)

    def unbind(self, queue: str, exchange: str, routing_key: str) -> None:
        rows = self._rows().filter(queue=queue, exchange=exchange, routing_key=routing_key or "")
        sqlite_retry(self.alias, lambda: rows.delete())
        self._cache.pop(exchange, None)

    def delete_queue(self, queue: str) -> None:
        rows = self._rows().filter(queue=queue)
        sqlite_retry(self.alias, lambda: rows.delete())
        self._cache.clear()

    def delete_exchange(self, exchange: str) -> None:
        rows = self._rows().filter(exchange=exchange)
        sqlite_retry(self.alias, lambda: rows.delete())
        self._cache.pop(exchange, None)

    def has_queue(self, queue: str) -> bool:
        return self._rows().filter(queue=queue).exists()

    def exchange_type(self, exchange: str) -> str | None:
        return self._read(exchange, refresh=False)[1]

    def table(self, exchange: str, refresh: bool = False) -> list[tuple[str, str]]:
        """``[(routing_key, queue)]`` bound to ``exchange`` by any process."""
        return self._read(exchange, refresh)[2]

    def _read(
        self, exchange: str, refresh: bool
    ) -> tuple[float, str | None, list[tuple[str, str]]]:
        cached = self._cache.get(exchange)
        if cached is not None and not refresh and time.monotonic() - cached[0] < CACHE_SECONDS:
            return cached
        rows = list(
            self._rows()
            .filter(exchange=exchange)
            .order_by("id")
            .values_list("routing_key", "queue", "exchange_type")
        )
        kind = rows[-1][2] if rows else None
        entry = (time.monotonic(), kind, [(rk, queue) for rk, queue, _ in rows])
        self._cache[exchange] = entry
        return entry
