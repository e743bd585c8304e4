"""Task and group results in the Django database (the ``django-db`` store)."""

from __future__ import annotations

from django.db import models

from .. import states
from ..results.codec import ResultJSONDecoder, ResultJSONEncoder

STATE_CHOICES = sorted((s, s) for s in states.ALL_STATES)


def _json(**kwargs):
    """A JSON column whose datetimes, Decimals and UUIDs read back as the same types."""
    return models.JSONField(encoder=ResultJSONEncoder, decoder=ResultJSONDecoder, **kwargs)


class TaskResult(models.Model):
    # identity
    task_id = models.CharField(max_length=255, unique=True)
    task_name = models.CharField(max_length=255, null=True, blank=True, db_index=True)
    queue = models.CharField(max_length=200, null=True, blank=True)
    # state and timing
    state = models.CharField(max_length=50, default=states.PENDING, db_index=True)
    worker = models.CharField(max_length=255, null=True, blank=True)
    retries = models.PositiveIntegerField(default=0, null=True, blank=True)
    date_sent = models.DateTimeField(null=True, blank=True)
    date_started = models.DateTimeField(null=True, blank=True)
    date_done = models.DateTimeField(null=True, blank=True, db_index=True)
    date_created = models.DateTimeField(auto_now_add=True)
    date_updated = models.DateTimeField(auto_now=True, db_index=True)
    # content
    args = _json(null=True, blank=True)
    kwargs = _json(null=True, blank=True)
    result = _json(null=True, blank=True)
    traceback = models.TextField(null=True, blank=True)
    meta = _json(null=True, blank=True, help_text="Custom state info (progress) from update_state.")
    children = _json(null=True, blank=True, help_text="Result tuples of subtasks it started.")
    # lineage
    parent_id = models.CharField(max_length=255, null=True, blank=True, db_index=True)
    root_id = models.CharField(max_length=255, null=True, blank=True, db_index=True)
    group_id = models.CharField(max_length=255, null=True, blank=True, db_index=True)
    periodic_task_name = models.CharField(max_length=255, null=True, blank=True)

    class Meta:
        db_table = "tasks_q_task_result"
        ordering = ["-date_created"]
        indexes = [
            models.Index(fields=["state", "-date_done"], name="tasks_q_result_state_done"),
            models.Index(fields=["task_name", "-date_created"], name="tasks_q_result_name"),
            models.Index(fields=["-date_created"], name="tasks_q_result_created"),
        ]

    def __str__(self) -> str:
        return f"<Task: {self.task_id} ({self.state})>"


class GroupResult(models.Model):
    group_id = models.CharField(max_length=255, unique=True)
    result_ids = models.JSONField(default=list)
    date_created = models.DateTimeField(auto_now_add=True, db_index=True)
    date_done = models.DateTimeField(null=True, blank=True, db_index=True)

    class Meta:
        db_table = "tasks_q_group_result"
        ordering = ["-date_created"]

    def __str__(self) -> str:
        return f"<Group: {self.group_id}>"


class ChordCounter(models.Model):
    """Members of a chord header still to finish; the body fires when it reaches zero."""

    group_id = models.CharField(max_length=255, unique=True)
    remaining = models.IntegerField()
    total = models.IntegerField()
    body = _json()
    result_ids = models.JSONField(default=list)
    date_created = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        db_table = "tasks_q_chord_counter"

    def __str__(self) -> str:
        return f"<Chord: {self.group_id} {self.remaining}/{self.total}>"


class ChordPart(models.Model):
    """A header member already counted, so a redelivered member is not counted twice."""

    counter = models.ForeignKey(ChordCounter, on_delete=models.CASCADE, related_name="parts")
    task_id = models.CharField(max_length=255)

    class Meta:
        db_table = "tasks_q_chord_part"
        constraints = [
            models.UniqueConstraint(fields=["counter", "task_id"], name="tasks_q_chord_part_once")
        ]

    def __str__(self) -> str:
        return f"<ChordPart: {self.task_id}>"
