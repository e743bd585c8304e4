"""Messages waiting for a far ETA on brokers without a delayed store of their own (RabbitMQ)."""

from __future__ import annotations

from django.db import models


class DelayedMessage(models.Model):
    """A task message held until its ETA, then published to ``queue`` by a worker.

    One row per task id: moving the same message here twice stores it once.
    """

    task_id = models.CharField(max_length=255, unique=True)
    task_name = models.CharField(max_length=255, null=True, blank=True)
    queue = models.CharField(max_length=200)
    eta = models.DateTimeField(db_index=True)
    payload = models.JSONField()
    date_created = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "tasks_q_delayed_message"
        ordering = ["eta"]

    def __str__(self) -> str:
        return f"{self.task_name}[{self.task_id}] at {self.eta:%Y-%m-%d %H:%M:%S}"
