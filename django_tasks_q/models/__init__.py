"""Models, one module per concept; imported here so Django finds them."""

from .broker import BroadcastMessage, QueueBinding, QueueMessage
from .delayed import DelayedMessage
from .results import ChordCounter, ChordPart, GroupResult, TaskResult
from .workers import DeadLetter, RevokedTask, WorkerHeartbeat

__all__ = [
    "BroadcastMessage",
    "ChordCounter",
    "ChordPart",
    "DeadLetter",
    "DelayedMessage",
    "GroupResult",
    "QueueBinding",
    "QueueMessage",
    "RevokedTask",
    "TaskResult",
    "WorkerHeartbeat",
]
