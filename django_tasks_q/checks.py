"""System checks with stable ids (``tasks_q.E001``...), as listed in docs/configuration.md."""

from __future__ import annotations

from typing import Any

from django.core import checks
from django.core.exceptions import ImproperlyConfigured


@checks.register("tasks_q")
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    from .conf import settings

    errors: list[checks.CheckMessage] = []
    try:
        conf = settings.as_dict()
    except ImproperlyConfigured as exc:
        return [checks.Error(str(exc), id="tasks_q.E000")]
    errors += _check_broker(conf["BROKER_URL"])
    errors += _check_result_backend(conf["RESULT_BACKEND"])
    errors += _check_serializers(conf)
    errors += _check_app_order()
    errors += _check_numbers(conf)
    return errors


def _check_broker(url: Any) -> list[checks.CheckMessage]:
    from .messaging.connection import mask_url, transport_for

    if not isinstance(url, str) or "://" not in url:
        return [
            checks.Error(
                f"TASKS_Q['BROKER_URL'] {url!r} is not a URL.",
                hint="Use e.g. 'django://', 'redis://localhost:6379/0' or 'amqp://guest:guest@localhost//'.",
                id="tasks_q.E001",
            )
        ]
    try:
        transport_for(url)
        from kombu.utils.url import parse_url

        parse_url(url)
    except Exception as exc:
        return [
            checks.Error(
                f"TASKS_Q['BROKER_URL'] {mask_url(url)!r} does not parse: {exc}", id="tasks_q.E001"
            )
        ]
    return []


def _check_result_backend(value: Any) -> list[checks.CheckMessage]:
    from django.conf import settings as django_settings

    if value in ("django-db", "django", "db") or value is None:
        return []
    if isinstance(value, str) and value.startswith(("redis://", "rediss://", "unix://", "memory://")):
        return []
    from .results.base import ResultStore

    if isinstance(value, ResultStore):
        return []
    if isinstance(value, str) and value.startswith("cache://"):
        alias = value[len("cache://") :] or "default"
        caches = getattr(django_settings, "CACHES", {})
        if alias not in caches:
            return [
                checks.Error(
                    f"TASKS_Q['RESULT_BACKEND'] names cache alias {alias!r}, which is not in CACHES.",
                    hint=f"Add a django-redis cache named {alias!r} to CACHES.",
                    id="tasks_q.E002",
                )
            ]
        backend = caches[alias].get("BACKEND", "")
        if "django_redis" not in backend:
            return [
                checks.Error(
                    f"Cache {alias!r} uses {backend!r}; the cache:// result store needs django-redis.",
                    hint="Set its BACKEND to 'django_redis.cache.RedisCache'.",
                    id="tasks_q.E002",
                )
            ]
        return []
    return [
        checks.Error(
            f"TASKS_Q['RESULT_BACKEND'] {value!r} is not a known result store.",
            hint="Use 'django-db' (default), 'cache://<alias>', 'redis://host:port/db' or 'memory://' (tests).",
            id="tasks_q.E002",
        )
    ]


def _check_serializers(conf: dict[str, Any]) -> list[checks.CheckMessage]:
    from .serialization import content_type_of

    errors: list[checks.CheckMessage] = []
    accept = conf["ACCEPT_CONTENT"]
    if not isinstance(accept, list | tuple | set) or not accept:
        return [
            checks.Error(
                f"TASKS_Q['ACCEPT_CONTENT'] must be a non-empty list, got {accept!r}.",
                hint='The default is ["json"].',
                id="tasks_q.E003",
            )
        ]
    for name in list(accept) + [conf["TASK_SERIALIZER"], conf["RESULT_SERIALIZER"]]:
        if not isinstance(name, str):
            errors.append(
                checks.Error(
                    f"Serializer names in TASKS_Q must be strings like 'json', got {name!r}.",
                    id="tasks_q.E003",
                )
            )
            continue
        try:
            content_type_of(name) if "/" not in name else None
        except Exception as exc:
            errors.append(checks.Error(str(exc), id="tasks_q.E003"))
    if any(a in ("pickle", "application/x-python-serialize") for a in accept):
        errors.append(
            checks.Warning(
                "TASKS_Q['ACCEPT_CONTENT'] accepts pickle: anyone who can write to the broker "
                "can run code in your workers.",
                hint="Accept only 'json' unless every producer is trusted and the broker is private.",
                id="tasks_q.W001",
            )
        )
    if conf["TASK_SERIALIZER"] not in accept:
        errors.append(
            checks.Error(
                f"TASK_SERIALIZER {conf['TASK_SERIALIZER']!r} is not in ACCEPT_CONTENT, so workers "
                "would refuse every message.",
                hint="Add it to ACCEPT_CONTENT.",
                id="tasks_q.E004",
            )
        )
    return errors


def _check_app_order() -> list[checks.CheckMessage]:
    from django.conf import settings as django_settings

    apps = [a.split(".apps.")[0] for a in django_settings.INSTALLED_APPS]
    if "channels" in apps and "django_tasks_q" in apps:
        if apps.index("channels") < apps.index("django_tasks_q"):
            return [
                checks.Warning(
                    "'channels' comes before 'django_tasks_q' in INSTALLED_APPS, so "
                    "`manage.py runworker` is Channels' command, not the task worker.",
                    hint="Put 'django_tasks_q' before 'channels'; our runworker hands "
                    "Channels-style calls (runworker <channel>) over to Channels.",
                    id="tasks_q.W002",
                )
            ]
    return []


def _check_numbers(conf: dict[str, Any]) -> list[checks.CheckMessage]:
    errors = []
    for key in ("MAX_DELIVERIES", "PREFETCH_MULTIPLIER", "MESSAGE_MAX_SIZE"):
        value = conf[key]
        if not isinstance(value, int) or value < 1:
            errors.append(
                checks.Error(
                    f"TASKS_Q[{key!r}] must be a positive integer, got {value!r}.",
                    id="tasks_q.E005",
                )
            )
    for key in ("POLL_INTERVAL", "HEARTBEAT_INTERVAL", "HEARTBEAT_TIMEOUT", "ETA_HORIZON"):
        value = conf[key]
        if not isinstance(value, int | float) or value <= 0:
            errors.append(
                checks.Error(
                    f"TASKS_Q[{key!r}] must be a positive number of seconds, got {value!r}.",
                    id="tasks_q.E005",
                )
            )
    timeout, interval = conf["HEARTBEAT_TIMEOUT"], conf["HEARTBEAT_INTERVAL"]
    numbers = all(isinstance(v, int | float) for v in (timeout, interval))
    if numbers and timeout < 2 * interval:
        errors.append(
            checks.Error(
                "TASKS_Q['HEARTBEAT_TIMEOUT'] must be at least twice HEARTBEAT_INTERVAL (beats can "
                "come up to 1.5 intervals apart), or live workers would look dead and their messages would be redelivered.",
                hint="Keep HEARTBEAT_TIMEOUT at 3-6x HEARTBEAT_INTERVAL.",
                id="tasks_q.E006",
            )
        )
    return errors
