"""Names of the Redis keys the transport uses.

Ready messages stay where kombu's stock Redis transport keeps them (a list per
queue and priority band, ``<queue>`` and ``<queue><sep><band>``), so Celery
clients and workers can share queues with ours.  Everything we add lives under
``tasks_q:``:

* ``tasks_q:owners``            set of consumer owners that may hold messages
* ``tasks_q:owner:<owner>``     an owner's heartbeat (string with a TTL)
* ``tasks_q:inflight:<owner>``  hash: delivery tag -> ``<list key>\\n<payload>``
* ``tasks_q:waiting:<queue>``   list of owners blocked waiting for this queue (idle)
* ``tasks_q:inbox:<owner>``     list: what was handed to (or poked at) a waiting owner
* ``tasks_q:idlereg:<owner>``   set of the ``waiting`` lists an owner is on
* ``tasks_q:handseq``           counter for the tags of handed messages (``h<n>``)
* ``tasks_q:delayed``           sorted set: member -> ETA (unix seconds)
* ``tasks_q:delayed:messages``  hash: member -> ``<list key>\\n<waiting key>\\n<payload>``
* ``tasks_q:sweep_lock``        short lock that rate-limits sweeps for dead owners
* ``tasks_q:undecodable:<queue>`` list of payloads that were not kombu JSON
"""

from __future__ import annotations

PREFIX = "tasks_q:"
OWNERS = PREFIX + "owners"
SWEEP_LOCK = PREFIX + "sweep_lock"
DELAYED = PREFIX + "delayed"
DELAYED_MESSAGES = PREFIX + "delayed:messages"


def heartbeat(owner: str) -> str:
    return f"{PREFIX}owner:{owner}"


def inflight(owner: str) -> str:
    return f"{PREFIX}inflight:{owner}"


def waiting(queue: str) -> str:
    """The list of owners blocked waiting for ``queue`` (see ``scripts.LUA_HELPERS``)."""
    return f"{PREFIX}waiting:{queue}"


def inbox(owner: str) -> str:
    return f"{PREFIX}inbox:{owner}"


def idle_registry(owner: str) -> str:
    return f"{PREFIX}idlereg:{owner}"


def undecodable(queue: str) -> str:
    return f"{PREFIX}undecodable:{queue}"


def queue_of(list_key: str, sep: str) -> str:
    """The queue a ready list belongs to: ``q`` for ``q`` and for ``q<sep>7``."""
    return list_key.rsplit(sep, 1)[0] if sep in list_key else list_key


def check_queue_name(queue: str) -> None:
    """Reject queue names the key layout cannot hold."""
    if not queue or "\n" in queue:
        raise ValueError(
            f"Invalid queue name {queue!r} for the Redis transport: "
            "use a non-empty name without newlines."
        )
