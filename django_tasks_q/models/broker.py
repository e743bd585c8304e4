"""Rows behind the ``django://`` broker transport (docs/brokers.md)."""

from __future__ import annotations

from django.core.serializers.json import DjangoJSONEncoder
from django.db import models


class QueueMessage(models.Model):
    """One message waiting in, or reserved from, a queue.

    A row is claimed by setting ``owner``/``reserved_at``; ack deletes it and a
    requeue clears ``owner``. ``visible_at`` holds delayed (ETA) messages back.
    ``payload`` is kombu's message: body, content type and encoding, headers
    and properties.
    """

    id = models.BigAutoField(primary_key=True)
    queue = models.CharField(max_length=200)
    payload = models.JSONField(encoder=DjangoJSONEncoder)
    priority = models.PositiveSmallIntegerField(default=0)
    visible_at = models.DateTimeField()
    created_at = models.DateTimeField(auto_now_add=True)
    owner = models.CharField(max_length=255, null=True, blank=True)
    reserved_at = models.DateTimeField(null=True, blank=True)
    delivery_count = models.PositiveIntegerField(default=0)
    task_id = models.CharField(max_length=255, null=True, blank=True, db_index=True)

    class Meta:
        db_table = "tasks_q_queue_message"
        indexes = [
            # The claim: WHERE queue = %s AND owner IS NULL AND visible_at <= now
            # ORDER BY priority DESC, visible_at, id. Reserved rows leave the index.
            models.Index(
                fields=["queue", "-priority", "visible_at", "id"],
                name="tasks_q_msg_ready",
                condition=models.Q(owner__isnull=True),
            ),
            models.Index(fields=["owner"], name="tasks_q_msg_owner"),
        ]

    def __str__(self) -> str:
        return f"{self.queue}#{self.pk}"


class BroadcastMessage(models.Model):
    """A fanout message (control commands, events) on the database transport.

    One row per publish; every queue bound to the exchange reads the rows with
    an id above the last one it saw. Rows expire after a few minutes.
    """

    id = models.BigAutoField(primary_key=True)
    exchange = models.CharField(max_length=200)
    routing_key = models.CharField(max_length=255, blank=True, default="")
    payload = models.JSONField(encoder=DjangoJSONEncoder)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        db_table = "tasks_q_broadcast_message"
        indexes = [models.Index(fields=["exchange", "id"], name="tasks_q_bcast_exchange")]

    def __str__(self) -> str:
        return f"{self.exchange}#{self.pk}"


class QueueBinding(models.Model):
    """A declared queue and its bindings, shared by every process on the database.

    kombu keeps exchanges and bindings in memory per connection; this table lets
    a process publish to an exchange whose queues another process bound (pidbox
    replies, for one). A row with an empty ``exchange`` records a declared queue.
    """

    queue = models.CharField(max_length=200)
    exchange = models.CharField(max_length=200, blank=True, default="")
    routing_key = models.CharField(max_length=255, blank=True, default="")
    exchange_type = models.CharField(max_length=20, default="direct")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "tasks_q_queue_binding"
        constraints = [
            models.UniqueConstraint(
                fields=["queue", "exchange", "routing_key"], name="tasks_q_binding_unique"
            )
        ]
        indexes = [models.Index(fields=["exchange"], name="tasks_q_binding_exchange")]

    def __str__(self) -> str:
        return f"{self.exchange or '(default)'} -[{self.routing_key}]-> {self.queue}"
