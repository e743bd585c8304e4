"""Queues and routes: ``QUEUES`` declares queues, ``TASK_ROUTES`` picks one per task."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from .conf import settings


@dataclass(frozen=True)
class QueueSpec:
    name: str
    exchange: str | None = None
    routing_key: str | None = None
    max_priority: int | None = None


def declared_queues() -> list[QueueSpec]:
    """The queues from ``QUEUES`` (names or dicts); the default queue is always there."""
    raw = settings.QUEUES
    default = settings.DEFAULT_QUEUE
    specs: list[QueueSpec] = []
    if raw is None:
        raw = [default]
    if not isinstance(raw, list | tuple | dict):
        raise ImproperlyConfigured(
            f"TASKS_Q['QUEUES'] must be a list of names or dicts, got {type(raw).__name__}"
        )
    items = raw.items() if isinstance(raw, dict) else ((None, q) for q in raw)
    for key, item in items:
        if isinstance(item, str):
            specs.append(QueueSpec(item))
        elif isinstance(item, dict):
            name = item.get("name", key)
            if not name:
                raise ImproperlyConfigured(f"A queue in TASKS_Q['QUEUES'] has no name: {item!r}")
            specs.append(
                QueueSpec(
                    name,
                    item.get("exchange"),
                    item.get("routing_key"),
                    item.get("max_priority"),
                )
            )
        else:
            raise ImproperlyConfigured(
                f"TASKS_Q['QUEUES'] entries must be names or dicts, got {item!r}"
            )
    if default not in {s.name for s in specs}:
        specs.insert(0, QueueSpec(default))
    return specs


def queue_names() -> list[str]:
    return [q.name for q in declared_queues()]


def _route_value(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return {"queue": value}
    if isinstance(value, dict):
        return dict(value)
    raise ImproperlyConfigured(
        f"A TASK_ROUTES entry must map to a queue name or an options dict, got {value!r}"
    )


def route_for(name: str, args: Any = (), kwargs: Any = None, options: Any = None) -> dict[str, Any]:
    """Routing options (``queue``, ``routing_key``, ``priority``...) for task ``name``."""
    routes = settings.TASK_ROUTES
    if not routes:
        return {}
    for router in routes if isinstance(routes, list | tuple) else [routes]:
        found = _apply_router(router, name, args, kwargs or {}, options or {})
        if found:
            return found
    return {}


def _apply_router(router: Any, name: str, args: Any, kwargs: Any, options: Any) -> Any:
    if isinstance(router, str):
        router = import_string(router)
    if isinstance(router, dict):
        if name in router:
            return _route_value(router[name])
        for pattern, value in router.items():
            if any(c in pattern for c in "*?[") and fnmatchcase(name, pattern):
                return _route_value(value)
        return None
    if isinstance(router, Callable):
        return _route_value(router(name, args, kwargs, options))
    raise ImproperlyConfigured(
        f"TASKS_Q['TASK_ROUTES'] must be a dict, a callable or a list of them, got {router!r}"
    )
