"""A plain Celery app: the peer of the interoperation tests (tests/integration/test_celery_interop.py).

Run as a real Celery worker in a subprocess::

    PEER_BROKER_URL=redis://... PEER_RESULT_BACKEND=redis://... \\
        celery -A tests.integration.celery_peer worker --pool solo -Q <queue>

It imports nothing from Django or django_tasks_q.
"""

from __future__ import annotations

import os

from celery import Celery

app = Celery(
    "interop_peer",
    broker=os.environ.get("PEER_BROKER_URL", "memory://"),
    backend=os.environ.get("PEER_RESULT_BACKEND", "cache+memory://"),
    set_as_current=False,
)
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    worker_hijack_root_logger=False,
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
    result_expires=600,
    enable_utc=True,
)


@app.task(name="interop.add")
def add(x, y):
    return x + y


@app.task(name="interop.mul")
def mul(x, y):
    return x * y


@app.task(name="interop.ping")
def ping():
    return "pong"


@app.task(name="interop.echo", bind=True)
def echo(self, *args, **kwargs):
    """Return what Celery understood of the message, as JSON-friendly values."""
    r = self.request
    return {
        "id": r.id,
        "task": r.task,
        "args": list(args),
        "kwargs": kwargs,
        "retries": r.retries,
        "root_id": r.root_id,
        "parent_id": r.parent_id,
        "group": r.group,
        "group_index": r.group_index,
        "eta": str(r.eta) if r.eta else None,
        "expires": str(r.expires) if r.expires else None,
        "timelimit": list(r.timelimit or (None, None)),
        "origin": r.origin,
        "correlation_id": r.correlation_id,
        "tenant": getattr(r, "tenant", None),  # a custom header: Celery puts it on the request
        "delivery_priority": (r.delivery_info or {}).get("priority"),
    }
