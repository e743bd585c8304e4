"""The environment variables the harness passes to every peer process.

* ``BENCH_BROKER``    ``redis`` | ``amqp`` | ``db`` (the peer's database broker)
* ``BENCH_RESULTS``   ``off`` | ``redis`` | ``db``
* ``BENCH_REDIS_URL`` this system's own Redis database (broker, results and counter)
* ``BENCH_AMQP_URL``  RabbitMQ
* ``BENCH_PG_DB``     this system's own PostgreSQL database
* ``BENCH_QUEUE``     this system's queue name
* ``BENCH_CONCURRENCY`` worker processes, for peers configured in settings
"""

from __future__ import annotations

import os

BROKER = os.environ.get("BENCH_BROKER", "redis")
RESULTS = os.environ.get("BENCH_RESULTS", "off")
REDIS_URL = os.environ["BENCH_REDIS_URL"]  # set by the harness: one database per system
AMQP_URL = os.environ.get("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
PG_DB = os.environ.get("BENCH_PG_DB", "bench")
QUEUE = os.environ.get("BENCH_QUEUE", "bench")
CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", "2"))


def postgres(name: str = PG_DB) -> dict:
    """A Django DATABASES entry for this system's PostgreSQL database."""
    return {
        "ENGINE": "django.db.backends.postgresql",
        "HOST": os.environ.get("POSTGRES_HOST", "127.0.0.1"),
        "PORT": os.environ.get("POSTGRES_PORT", "5432"),
        "NAME": name,
        "USER": os.environ.get("POSTGRES_USER", "postgres"),
        "PASSWORD": os.environ.get("POSTGRES_PASSWORD", ""),
    }


def django_base(apps: list[str]) -> dict:
    """Settings shared by the peers' tiny Django projects."""
    return {
        "SECRET_KEY": "bench-not-secret",
        "DEBUG": False,
        "USE_TZ": True,
        "TIME_ZONE": "UTC",
        "INSTALLED_APPS": ["django.contrib.contenttypes", "django.contrib.auth", *apps],
        "DATABASES": {"default": postgres()},
        "DEFAULT_AUTO_FIELD": "django.db.models.BigAutoField",
        "LOGGING": {
            "version": 1,
            "disable_existing_loggers": False,
            "root": {"level": "WARNING"},
        },
    }
