"""Worker liveness, persisted revokes and dead letters."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db import models

#: a heartbeat row silent for this many heartbeat timeouts is deleted
PRUNE_AFTER_TIMEOUTS = 10


class WorkerHeartbeat(models.Model):
    """A live worker consumer. ``owner`` is the id written on claimed rows.

    Rows are deleted when their owner stops cleanly; the rows of owners that
    died (``SIGKILL``, a lost host) are deleted by :meth:`prune`, once their
    messages have long been released.
    """

    owner = models.CharField(max_length=255, unique=True)
    hostname = models.CharField(max_length=255)
    pid = models.IntegerField(null=True, blank=True)
    queues = models.JSONField(default=list)
    concurrency = models.IntegerField(null=True, blank=True)
    started_at = models.DateTimeField(auto_now_add=True)
    last_seen = models.DateTimeField(db_index=True)
    stats = models.JSONField(default=dict)

    class Meta:
        db_table = "tasks_q_worker"

    def __str__(self) -> str:
        return self.hostname

    @classmethod
    def prune(cls, alias: str, timeout: float, now: datetime) -> int:
        """Delete the rows of owners silent for ``PRUNE_AFTER_TIMEOUTS`` timeouts; return how many."""
        cutoff = now - timedelta(seconds=timeout * PRUNE_AFTER_TIMEOUTS)
        rows = cls._base_manager.using(alias).filter(last_seen__lt=cutoff)
        if not rows.exists():  # a read: no write lock taken on every sweep
            return 0
        return rows.delete()[0]


class RevokedTask(models.Model):
    task_id = models.CharField(max_length=255, unique=True)
    terminate = models.BooleanField(default=False)
    signal = models.CharField(max_length=20, blank=True, default="")
    expires = models.DateTimeField(db_index=True)
    # indexed: workers refresh their revoked set with ``date_created > last seen``
    date_created = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        db_table = "tasks_q_revoked"

    def __str__(self) -> str:
        return self.task_id


class DeadLetter(models.Model):
    """A message that could not be processed, kept for inspection and replay."""

    task_id = models.CharField(max_length=255, null=True, blank=True, db_index=True)
    task_name = models.CharField(max_length=255, null=True, blank=True)
    queue = models.CharField(max_length=200, null=True, blank=True)
    reason = models.CharField(max_length=100)
    detail = models.TextField(blank=True, default="")
    payload = models.JSONField()
    date_created = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        db_table = "tasks_q_dead_letter"
        ordering = ["-date_created"]

    def __str__(self) -> str:
        return f"{self.task_name} ({self.reason})"
