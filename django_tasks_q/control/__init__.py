"""Remote control of workers (Celery-shaped): ``control.revoke``, ``control.inspect()``...

Importing this opens no connection; the first command builds this process's pool.
"""

from .arguments import destinations
from .client import Control, control
from .inspector import Inspect, flatten_replies
from .mailbox import NAMESPACE, ControlError, new_mailbox, reply_queue

# Module-level shortcuts, so ``from django_tasks_q import control; control.revoke(id)`` works.
revoke = control.revoke
terminate = control.terminate
rate_limit = control.rate_limit
time_limit = control.time_limit
shutdown = control.shutdown
pool_grow = control.pool_grow
pool_shrink = control.pool_shrink
add_consumer = control.add_consumer
cancel_consumer = control.cancel_consumer
ping = control.ping
broadcast = control.broadcast
purge = control.purge
inspect = control.inspect

__all__ = [
    "add_consumer",
    "broadcast",
    "cancel_consumer",
    "inspect",
    "ping",
    "pool_grow",
    "pool_shrink",
    "purge",
    "rate_limit",
    "revoke",
    "shutdown",
    "terminate",
    "time_limit",
    "NAMESPACE",
    "Control",
    "ControlError",
    "Inspect",
    "control",
    "destinations",
    "flatten_replies",
    "new_mailbox",
    "reply_queue",
]
