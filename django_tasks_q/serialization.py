"""Content types and the accept list, over kombu's serializer registry.

JSON is the default and the only accepted type unless the user opts in through
``ACCEPT_CONTENT``. Nothing unpickles unless ``pickle`` is in that list.
"""

from __future__ import annotations

from typing import Any

from kombu.serialization import dumps as kombu_dumps
from kombu.serialization import loads as kombu_loads
from kombu.serialization import prepare_accept_content, registry

from .exceptions import ContentDisallowed, DecodeError, EncodeError

_OPTIONAL_MODULES = {"msgpack": "msgpack", "yaml": "yaml"}


def content_type_of(name: str) -> str:
    """Map a serializer name (``"json"``) to its mime type (``"application/json"``)."""
    try:
        return registry.name_to_type[name]
    except KeyError:
        known = ", ".join(sorted(registry.name_to_type))
        hint = ""
        if name in _OPTIONAL_MODULES:
            hint = f" Install the '{name}' extra: pip install 'django-tasks-q[{name}]'."
        raise EncodeError(f"Unknown serializer {name!r}; known serializers: {known}.{hint}")


def accepted_types(accept: list[str] | tuple[str, ...] | set[str]) -> set[str]:
    """The set of mime types allowed by an ACCEPT_CONTENT list."""
    return prepare_accept_content(list(accept))


def dumps(obj: Any, serializer: str) -> tuple[str, str, bytes | str]:
    """Encode ``obj``; return ``(content_type, content_encoding, data)``."""
    try:
        return kombu_dumps(obj, serializer=serializer)
    except Exception as exc:  # kombu wraps in its own EncodeError
        raise EncodeError(f"Could not encode with {serializer!r}: {exc}") from exc


def loads(data: bytes | str, content_type: str, content_encoding: str, accept: set[str]) -> Any:
    """Decode ``data``, refusing content types outside ``accept``."""
    if content_type not in accept:
        raise ContentDisallowed(
            f"Refusing to decode content type {content_type!r}: it is not in ACCEPT_CONTENT "
            f"(accepted: {sorted(accept)}). Add its name to TASKS_Q['ACCEPT_CONTENT'] to allow it."
        )
    try:
        return kombu_loads(data, content_type, content_encoding, accept=accept)
    except Exception as exc:
        raise DecodeError(f"Could not decode {content_type} body: {exc}") from exc


def check_encodable(obj: Any, serializer: str, what: str) -> None:
    """Raise EncodeError naming ``what`` when ``obj`` cannot be encoded."""
    try:
        kombu_dumps(obj, serializer=serializer)
    except Exception as exc:
        raise EncodeError(f"{what} cannot be serialised with {serializer!r}: {exc}") from exc
