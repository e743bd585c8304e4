"""Exceptions to and from JSON, Celery-style, without pickle.

A stored failure is ``{"exc_type": "ValueError", "exc_module": "builtins",
"exc_message": [args...]}``. Reading it back rebuilds the original class when its
module is already loaded in this process (or belongs to an installed Django app)
and the class is an ``Exception`` subclass; anything else comes back as
:class:`django_tasks_q.exceptions.RemoteError` carrying the original names.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

from ..exceptions import RemoteError
from .codec import dumps


def _jsonable(value: Any) -> Any:
    try:
        dumps(value)
    except Exception:
        return repr(value)
    return value


def exception_to_dict(exc: BaseException) -> dict[str, Any]:
    """The JSON form of ``exc``: type name, module and args (unencodable args become repr)."""
    if isinstance(exc, RemoteError):
        exc_type, exc_module = exc.exc_type, exc.exc_module
    else:
        cls = type(exc)
        exc_type, exc_module = cls.__qualname__, cls.__module__
    return {
        "exc_type": exc_type,
        "exc_module": exc_module,
        "exc_message": [_jsonable(arg) for arg in exc.args],
    }


def is_exception_dict(value: Any) -> bool:
    return isinstance(value, dict) and "exc_type" in value


def _installed_app_packages() -> set[str]:
    try:
        from django.apps import apps

        return {cfg.module.__name__.split(".")[0] for cfg in apps.get_app_configs()}
    except Exception:  # apps not ready: only already-loaded modules qualify
        return set()


def _find_module(name: str | None) -> Any:
    """The module ``name`` if loaded already, or importable from an installed app; else None.

    Module names come from stored data, so nothing outside the project's own apps is
    ever imported because of them.
    """
    if not name:
        return None
    module = sys.modules.get(name)
    if module is not None:
        return module
    if name.split(".")[0] not in _installed_app_packages():
        return None
    try:
        return importlib.import_module(name)
    except Exception:
        return None


def _find_class(module: Any, qualname: str) -> type[Exception] | None:
    obj = module
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    if isinstance(obj, type) and issubclass(obj, Exception):
        return obj
    return None


def _instantiate(cls: type[Exception], args: list[Any]) -> Exception:
    try:
        return cls(*args)
    except Exception:  # an __init__ with a different signature: set args directly
        exc = cls.__new__(cls, *args)
        exc.args = tuple(args)
        return exc


def exception_from_dict(data: Any) -> Exception:
    """Rebuild the exception stored as ``data`` (see module docstring)."""
    if isinstance(data, BaseException):
        return data if isinstance(data, Exception) else RemoteError(type(data).__name__, None)
    if not is_exception_dict(data):
        return RemoteError("Exception", None, *([] if data is None else [data]))
    exc_type = str(data.get("exc_type") or "Exception")
    exc_module = data.get("exc_module")
    raw = data.get("exc_message")
    args = list(raw) if isinstance(raw, list | tuple) else ([] if raw is None else [raw])
    module = _find_module(exc_module)
    cls = _find_class(module, exc_type) if module is not None else None
    if cls is not None:
        try:
            return _instantiate(cls, args)
        except Exception:
            pass
    return RemoteError(exc_type, exc_module, *args)
