"""Far ETAs go to a durable delayed store, not into worker memory (DESIGN D4).

* ``django://`` and ``redis://``: the transports hold a message whose ``eta``
  header is beyond ``ETA_HORIZON`` back by themselves (the row's ``visible_at``,
  the Redis delayed sorted set), so the worker publishes the message again,
  unchanged, and acks the copy it received.
* other brokers (RabbitMQ): a ``DelayedMessage`` row per task id, inserted
  idempotently; :class:`DelayedPublisher`, run by every worker, publishes rows
  that come due. Each row is deleted in the same transaction that publishes it
  (``SKIP LOCKED`` where the database has it), so two workers never both publish.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from django.db import router, transaction
from django.utils import timezone

from ..deadletter import decode_body, encode_body, json_safe, restore
from ..message import EncodedMessage
from .consumer import DELIVERY_HEADERS

if TYPE_CHECKING:
    from .engine import Engine
    from .jobs import Job

logger = logging.getLogger("django_tasks_q.worker")

#: schemes whose transport keeps far-ETA messages back itself
OWN_DELAYED_STORE = frozenset({"django", "redis", "rediss"})
#: a due row is published this many seconds before its ETA; the worker holds it to the moment
PUBLISH_LEAD = 2.0


def has_own_store(scheme: str) -> bool:
    return scheme in OWN_DELAYED_STORE


def store_row(raw: Any, queue: str, task_id: str, task_name: str, eta: Any) -> bool:
    """Insert the message as a ``DelayedMessage`` (ignored if the task id is there); True if new."""
    from ..models import DelayedMessage

    body, body_encoding = encode_body(raw.body)
    properties = raw.properties or {}
    payload = {
        "body": body,
        "body_encoding": body_encoding,
        "content_type": raw.content_type,
        "content_encoding": raw.content_encoding,
        "headers": json_safe(
            {k: v for k, v in (raw.headers or {}).items() if k not in DELIVERY_HEADERS}
        ),
        "properties": json_safe(
            {
                k: properties[k]
                for k in ("correlation_id", "reply_to", "priority")
                if properties.get(k) is not None
            }
        ),
    }
    created = DelayedMessage.objects.bulk_create(
        [
            DelayedMessage(
                task_id=task_id, task_name=task_name, queue=queue, eta=eta, payload=payload
            )
        ],
        ignore_conflicts=True,
    )
    return bool(created and created[0].pk)


def defer(engine: Engine, job: Job) -> None:
    """A far ETA (or too many held): into the durable delayed store, then ack the copy."""
    from .holding import seconds_until

    try:
        if has_own_store(engine.scheme):
            engine.consumer.republish(job.raw, job.queue)
        else:
            store_row(job.raw, job.queue, job.id, job.name, job.request.eta)
    except engine.consumer.errors:
        raise
    except Exception:
        logger.exception(
            "Could not move task %s[%s] to the delayed store; holding it", job.name, job.id
        )
        engine.holding.hold(job, seconds_until(job.request.eta), "eta")
        return
    logger.debug(
        "Task %s[%s] (eta %s) moved to the delayed store", job.name, job.id, job.request.eta
    )
    engine.ack(job)


class DelayedPublisher:
    """Publishes ``DelayedMessage`` rows whose ETA is near; call :meth:`tick` about once a second."""

    def __init__(self, batch: int = 100) -> None:
        self.batch = batch

    def tick(self) -> int:
        from ..messaging.producer import get_publisher
        from ..models import DelayedMessage

        due = timezone.now() + timedelta(seconds=PUBLISH_LEAD)
        published = 0
        alias = router.db_for_write(DelayedMessage)
        with transaction.atomic(using=alias):
            qs = DelayedMessage.objects.using(alias)
            rows = list(
                qs.select_for_update(skip_locked=True)
                .filter(eta__lte=due)
                .order_by("eta")[: self.batch]
            )
            for row in rows:
                if not qs.filter(pk=row.pk).delete()[0]:
                    continue  # another worker took it
                stored = row.payload or {}
                properties = restore(stored.get("properties") or {})
                priority = properties.pop("priority", None)
                encoded = EncodedMessage(
                    body=decode_body(stored.get("body"), stored.get("body_encoding") or "utf-8"),
                    content_type=stored.get("content_type") or "application/json",
                    content_encoding=stored.get("content_encoding") or "utf-8",
                    headers=restore(stored.get("headers") or {}),
                    properties=properties,
                )
                get_publisher().publish(
                    encoded, row.queue, priority=priority if isinstance(priority, int) else None
                )
                published += 1
        if published:
            logger.debug("Published %d delayed message(s) that came due", published)
        return published
