"""The Celery app: the broker and result backend come from the bench environment."""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "celery_side.settings")

from benchenv import AMQP_URL, BROKER, QUEUE, REDIS_URL, RESULTS  # noqa: E402
from celery import Celery  # noqa: E402

app = Celery("celery_side", include=["celery_side.tasks"])
app.conf.update(
    broker_url=REDIS_URL if BROKER == "redis" else AMQP_URL,
    broker_connection_retry_on_startup=True,
    task_default_queue=QUEUE,
    task_ignore_result=RESULTS == "off",
    result_backend={"redis": REDIS_URL, "db": "django-db"}.get(RESULTS),
    worker_hijack_root_logger=True,
)
