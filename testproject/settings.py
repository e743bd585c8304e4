"""Settings for the demo and the test suite.

Defaults: SQLite and the ``django://`` broker (the embedded default).
Environment variables switch to the real services:

* ``TQ_DATABASE``: ``sqlite`` (default), ``postgres`` or ``mysql``
* ``POSTGRES_HOST`` / ``POSTGRES_PORT`` / ``POSTGRES_DB`` / ``POSTGRES_USER`` / ``POSTGRES_PASSWORD``
* ``MYSQL_HOST`` / ``MYSQL_PORT`` / ``MYSQL_DB`` / ``MYSQL_USER`` / ``MYSQL_PASSWORD``
* ``TQ_BROKER_URL``: e.g. ``redis://127.0.0.1:6379/0`` or ``amqp://guest:guest@127.0.0.1:5672//``
* ``TQ_RESULT_BACKEND``: ``django-db`` (default), ``cache://redis`` or ``redis://127.0.0.1:6379/1``
* ``REDIS_URL``: the Redis used by tests and the ``cache://`` store (default ``redis://127.0.0.1:6379/0``)
* ``AMQP_URL``: the RabbitMQ used by tests (default ``amqp://guest:guest@127.0.0.1:5672//``)
* ``TQ_EXTRA_APPS``: comma-separated apps appended to INSTALLED_APPS (the benchmarks use it)
* ``TQ_HEARTBEAT_INTERVAL``, ``TQ_HEARTBEAT_TIMEOUT``, ``TQ_POLL_INTERVAL``, ``TQ_ETA_HORIZON``,
  ``TQ_MAX_DELIVERIES``, ``TQ_PREFETCH_MULTIPLIER``, ``TQ_DEFAULT_QUEUE``: override those ``TASKS_Q`` keys (worker tests)
"""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "testproject-insecure-key")
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
ALLOWED_HOSTS = ["*"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_tasks_q",
    "channels",
    "testproject.demo",
]
# Extra apps, comma-separated (the benchmarks add ``bench.tasks_q_bench``).
INSTALLED_APPS += [app for app in os.environ.get("TQ_EXTRA_APPS", "").split(",") if app]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

ROOT_URLCONF = "testproject.urls"
ASGI_APPLICATION = "testproject.asgi.application"
WSGI_APPLICATION = "testproject.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

_db = os.environ.get("TQ_DATABASE", "sqlite")
if _db == "postgres":
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "HOST": os.environ.get("POSTGRES_HOST", "127.0.0.1"),
            "PORT": os.environ.get("POSTGRES_PORT", "5432"),
            "NAME": os.environ.get("POSTGRES_DB", "test"),
            "USER": os.environ.get("POSTGRES_USER", "postgres"),
            "PASSWORD": os.environ.get("POSTGRES_PASSWORD", ""),
            "TEST": {"NAME": os.environ.get("POSTGRES_TEST_DB", "test_tasks_q")},
        }
    }
elif _db == "mysql":
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.mysql",
            "HOST": os.environ.get("MYSQL_HOST", "127.0.0.1"),
            "PORT": os.environ.get("MYSQL_PORT", "3306"),
            "NAME": os.environ.get("MYSQL_DB", "test"),
            "USER": os.environ.get("MYSQL_USER", "root"),
            "PASSWORD": os.environ.get("MYSQL_PASSWORD", ""),
        }
    }
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.environ.get("SQLITE_PATH", str(BASE_DIR / "db.sqlite3")),
            "OPTIONS": {"timeout": 30, "transaction_mode": "IMMEDIATE", "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"},
            "TEST": {"NAME": os.environ.get("SQLITE_TEST_PATH", str(BASE_DIR / "test-db.sqlite3"))},
        }
    }

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")

CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    "redis": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": REDIS_URL,
        "OPTIONS": {"CLIENT_CLASS": "django_redis.client.DefaultClient"},
    },
}

TASKS_Q = {
    "BROKER_URL": os.environ.get("TQ_BROKER_URL", "django://"),
    "RESULT_BACKEND": os.environ.get("TQ_RESULT_BACKEND", "django-db"),
    "QUEUES": ["default", "images"],
}
# Numbers the worker tests shorten (e.g. TQ_HEARTBEAT_TIMEOUT=2 to see dead owners quickly).
for _key, _cast in (
    ("HEARTBEAT_INTERVAL", float), ("HEARTBEAT_TIMEOUT", float), ("POLL_INTERVAL", float),
    ("ETA_HORIZON", float), ("MAX_DELIVERIES", int), ("PREFETCH_MULTIPLIER", int),
    ("DEFAULT_QUEUE", str),
):  # fmt: skip
    if os.environ.get(f"TQ_{_key}"):
        TASKS_Q[_key] = _cast(os.environ[f"TQ_{_key}"])

CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
TIME_ZONE = "UTC"
STATIC_URL = "/static/"
LANGUAGE_CODE = "en-us"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"django_tasks_q": {"handlers": ["console"], "level": os.environ.get("TQ_LOGLEVEL", "WARNING")}},
}
