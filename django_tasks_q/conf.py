"""The ``TASKS_Q`` settings object: every default lives here, in one place.

Settings are read lazily, on attribute access, and re-read when Django sends
``setting_changed`` so ``override_settings(TASKS_Q=...)`` simply works in tests.
"""

from __future__ import annotations

import difflib
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.utils.module_loading import import_string

DEFAULTS: dict[str, Any] = {
    # Broker
    "BROKER_URL": "django://",
    "BROKER_TRANSPORT_OPTIONS": {},
    "BROKER_CONNECTION_TIMEOUT": 4.0,
    "BROKER_POOL_LIMIT": 10,
    # Results
    "RESULT_BACKEND": "django-db",
    "RESULT_EXPIRES": 86400,  # seconds; None keeps results forever
    "RESULT_SERIALIZER": "json",
    "RESULT_ARGS_MAX_SIZE": 16 * 1024,  # bytes of JSON kept for args/kwargs on a result row
    "RESULT_EXTENDED": True,
    "IGNORE_RESULT": False,
    # Queues and routing
    "DEFAULT_QUEUE": "default",
    "QUEUES": None,  # None: just DEFAULT_QUEUE; or a list of names / dicts
    "TASK_ROUTES": None,
    "DEFAULT_PRIORITY": None,
    # Serialisation
    "TASK_SERIALIZER": "json",
    "ACCEPT_CONTENT": ["json"],
    "MESSAGE_MAX_SIZE": 1024 * 1024,  # bytes of encoded body
    # Behaviour
    "ALWAYS_EAGER": False,
    "EAGER_PROPAGATES": False,
    "ACKS_LATE": True,
    "MAX_DELIVERIES": 5,
    "TRACK_STARTED": False,
    "DEFAULT_RETRY_DELAY": 180,
    "MAX_RETRIES": 3,
    "TIME_LIMIT": None,
    "SOFT_TIME_LIMIT": None,
    "PUBLISH_RETRY": True,
    "PUBLISH_RETRY_POLICY": {
        "max_retries": 3,
        "interval_start": 0,
        "interval_step": 0.2,
        "interval_max": 0.5,
    },
    # Database transport
    "DATABASE_ALIAS": "default",
    "POLL_INTERVAL": 0.1,
    "HEARTBEAT_INTERVAL": 10.0,
    "HEARTBEAT_TIMEOUT": 60.0,
    # Worker
    "PREFETCH_MULTIPLIER": 16,
    "ETA_HORIZON": 60.0,
    "REVOKES_EXPIRE": 3 * 86400,
    # Beat
    "BEAT_SCHEDULE": {},
    "TIMEZONE": None,  # None: Django's TIME_ZONE
}

IMPORT_STRINGS: frozenset[str] = frozenset()


def _nearest(key: str) -> str:
    match = difflib.get_close_matches(key, DEFAULTS, n=1, cutoff=0.5)
    return f" Did you mean {match[0]!r}?" if match else ""


class TasksQSettings:
    """Attribute access to ``settings.TASKS_Q`` with defaults and validation."""

    def __init__(self) -> None:
        self._cache: dict[str, Any] | None = None

    def _user_settings(self) -> dict[str, Any]:
        from django.conf import settings

        user = getattr(settings, "TASKS_Q", None) or {}
        if not isinstance(user, dict):
            raise ImproperlyConfigured(
                f"TASKS_Q must be a dict, got {type(user).__name__}. "
                'Write it as TASKS_Q = {"BROKER_URL": "..."}.'
            )
        for key in user:
            if key not in DEFAULTS:
                raise ImproperlyConfigured(
                    f"TASKS_Q has an unknown key {key!r}.{_nearest(key)} "
                    "The configuration reference in docs/configuration.md lists every key."
                )
        return user

    def as_dict(self) -> dict[str, Any]:
        if self._cache is None:
            merged = dict(DEFAULTS)
            merged.update(self._user_settings())
            self._cache = merged
        return self._cache

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if name not in DEFAULTS:
            raise AttributeError(f"Invalid TASKS_Q setting {name!r}.{_nearest(name)}")
        value = self.as_dict()[name]
        if name in IMPORT_STRINGS and isinstance(value, str):
            value = import_string(value)
        return value

    def reload(self) -> None:
        self._cache = None
        for hook in list(_reload_hooks):
            hook()


settings = TasksQSettings()
_reload_hooks: list = []


def on_reload(func):
    """Register ``func`` to run when ``TASKS_Q`` changes (tests, override_settings)."""
    _reload_hooks.append(func)
    return func


def _setting_changed(*, setting: str, **kwargs: Any) -> None:
    if setting in ("TASKS_Q", "TIME_ZONE", "DATABASES", "CACHES"):
        settings.reload()


setting_changed.connect(_setting_changed)
