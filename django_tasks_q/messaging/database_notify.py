"""Wake-up for ``django://`` on PostgreSQL: LISTEN on a dedicated psycopg connection.

Publishers call ``pg_notify('tasks_q', <queue>)`` in the statement that inserts
the row, so the notification is delivered when (and only if) they commit. A
consumer that found nothing waits here instead of sleeping a poll interval.
Any failure (server restart, network) drops the connection; the consumer then
polls until the next attempt to listen, a few seconds later.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any

from django.db import connections

from .database_sql import NOTIFY_CHANNEL

logger = logging.getLogger("django_tasks_q.messaging.database")

#: After a failed LISTEN, poll this long before trying again.
RETRY_AFTER = 5.0


def supported(alias: str) -> bool:
    """True when ``alias`` is PostgreSQL through psycopg 3 (LISTEN needs a blocking wait)."""
    connection = connections[alias]
    return connection.vendor == "postgresql" and connection.Database.__name__ == "psycopg"


class Listener:
    """One LISTEN connection per transport, per process."""

    def __init__(self, alias: str) -> None:
        self.alias = alias
        self._conn: Any = None
        self._pid = os.getpid()
        self._failed_at: float | None = None

    @property
    def active(self) -> bool:
        return self._conn is not None and self._pid == os.getpid()

    def ensure(self) -> bool:
        """Listen if not already; False when we must poll instead."""
        if self._pid != os.getpid():
            # Inherited over fork: the socket is the parent's. Drop it unclosed
            # (psycopg only terminates connections in the process that opened them).
            self._conn, self._pid = None, os.getpid()
        if self._conn is not None:
            return True
        if self._failed_at is not None and time.monotonic() - self._failed_at < RETRY_AFTER:
            return False
        try:
            import psycopg
            from psycopg import sql

            params = connections[self.alias].get_connection_params()
            conn = psycopg.connect(**params, autocommit=True)
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(NOTIFY_CHANNEL)))
        except Exception as exc:
            self._failed_at = time.monotonic()
            logger.warning(
                "Could not LISTEN on database %r (%s); polling every poll interval instead.",
                self.alias,
                type(exc).__name__,
            )
            return False
        self._conn, self._failed_at = conn, None
        return True

    def wait(self, timeout: float, wanted: Callable[[str], bool]) -> bool:
        """Block up to ``timeout`` seconds for a notification ``wanted`` accepts.

        Returns True when one arrived. On a broken connection, sleeps out the
        timeout (the caller then polls) and listens again later.
        """
        deadline = time.monotonic() + timeout
        try:
            while (remaining := deadline - time.monotonic()) > 0:
                hit = any(
                    wanted(n.payload) for n in self._conn.notifies(timeout=remaining, stop_after=1)
                )
                if hit:
                    for _ in self._conn.notifies(timeout=0):  # coalesce the burst
                        pass
                    return True
            return False
        except Exception as exc:
            logger.warning(
                "LISTEN connection to database %r failed (%s); polling until it is back.",
                self.alias,
                type(exc).__name__,
            )
            self.close()
            self._failed_at = time.monotonic()
            time.sleep(max(0.0, deadline - time.monotonic()))
            return False

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and self._pid == os.getpid():
            try:
                conn.close()
            except Exception:
                logger.debug("Closing the LISTEN connection failed", exc_info=True)
