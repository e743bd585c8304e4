"""One adapter per system; ``ADAPTERS`` lists them in the order a round runs them."""

from __future__ import annotations

from importlib import import_module

from .base import Adapter, Target

ORDER = ("tasks_q", "celery", "dramatiq", "rq", "huey", "django_q2", "django_tasks_db")


def adapters() -> dict[str, Adapter]:
    return {name: import_module(f".{name}", __name__).ADAPTER for name in ORDER}


__all__ = ["ORDER", "Adapter", "Target", "adapters"]
