"""Our kombu transport for Redis: ``django_tasks_q.messaging.redis:Transport``.

* :mod:`.channel`   the kombu channel: claims, acks, restores, publishing
* :mod:`.inflight`  one owner's in-flight hash, and the sweep for dead owners
* :mod:`.heartbeat` the per-process thread that keeps owners alive
* :mod:`.delayed`   the delayed store (sorted set of far-ETA messages)
* :mod:`.scripts`   the Lua scripts; :mod:`.keys` the key layout
* :mod:`.transport` the transports and the poller

Importing this package opens no connection.  docs/brokers-redis.md has the design.
"""

from .channel import Channel
from .delayed import DelayedStore, ScheduledMessage
from .transport import SecureTransport, SentinelChannel, SentinelTransport, Transport

__all__ = [
    "Channel",
    "DelayedStore",
    "ScheduledMessage",
    "SecureTransport",
    "SentinelChannel",
    "SentinelTransport",
    "Transport",
]
