"""Acks, rejects and restores for kombu, against the channel's in-flight hash.

No visibility timeout: kombu's periodic ``restore_visible`` hook runs the sweep
for dead owners instead.
"""

from __future__ import annotations

import logging
from typing import Any

from kombu.transport import virtual

logger = logging.getLogger("django_tasks_q.messaging.redis")


class QoS(virtual.QoS):
    """Acks and rejects against the channel's in-flight hash."""

    restore_at_shutdown = True

    def ack(self, delivery_tag: str) -> None:
        self.channel._ack(delivery_tag)
        super().ack(delivery_tag)

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:
        if requeue:
            self.channel._give_back([delivery_tag])
        else:
            self.channel._ack(delivery_tag)
        super().ack(delivery_tag)

    def restore_unacked(self) -> list:
        """Give every delivered, unacked message back to the head of its queue."""
        self._flush()
        tags = list(self._delivered)
        self._delivered.clear()
        try:
            self.channel._give_back(tags)
        except self.channel.connection_errors:
            logger.warning(
                "Could not give back %d unacked message(s) now; they will be redelivered "
                "once this consumer's heartbeat expires.",
                len(tags),
                exc_info=True,
            )
        return []

    def restore_visible(self, *args: Any, **kwargs: Any) -> None:
        """kombu's periodic hook: we sweep dead owners instead of a visibility timeout."""
        self.channel._maybe_sweep()
