"""Models, one module per concept; imported here so Django finds them."""

from .broker import BroadcastMessage, QueueMessage
from .results import ChordCounter, GroupResult, TaskResult
from .workers import DeadLetter, RevokedTask, WorkerHeartbeat

__all__ = [
    "BroadcastMessage",
    "ChordCounter",
    "DeadLetter",
    "GroupResult",
    "QueueMessage",
    "RevokedTask",
    "TaskResult",
    "WorkerHeartbeat",
]
