"""Build kombu connections for a broker URL, picking our transports where we have them.

``django://`` and ``redis://`` use transports from this package (atomic claims,
redelivery only from dead owners: DESIGN D3); ``amqp://`` and ``memory://`` use
kombu's own.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlparse

from kombu import Connection

from ..conf import settings

#: scheme -> transport (a kombu alias or an import path of a Transport class)
TRANSPORTS: dict[str, str] = {
    "django": "django_tasks_q.messaging.database:Transport",
    "redis": "django_tasks_q.messaging.redis:Transport",
    "rediss": "django_tasks_q.messaging.redis:SecureTransport",
    "sentinel": "django_tasks_q.messaging.redis:SentinelTransport",
    "amqp": "pyamqp",
    "amqps": "pyamqp",
    "pyamqp": "pyamqp",
    "memory": "memory",
}


def transport_for(url: str) -> str:
    scheme = urlparse(url).scheme
    try:
        return TRANSPORTS[scheme]
    except KeyError:
        raise ValueError(
            f"Unsupported broker URL scheme {scheme!r} in {mask_url(url)!r}; "
            f"use one of: {', '.join(sorted(s + '://' for s in TRANSPORTS))}"
        ) from None


def _resolve(transport: str) -> Any:
    if ":" in transport:
        from kombu.utils.imports import symbol_by_name

        return symbol_by_name(transport)
    return transport


def broker_connection(url: str | None = None, **options: Any) -> Connection:
    """A new (unconnected) kombu Connection for ``url`` (default: BROKER_URL)."""
    url = url or settings.BROKER_URL
    transport_options = dict(settings.BROKER_TRANSPORT_OPTIONS or {})
    transport_options.update(options.pop("transport_options", {}) or {})
    return Connection(
        url,
        transport=_resolve(transport_for(url)),
        transport_options=transport_options,
        connect_timeout=options.pop("connect_timeout", settings.BROKER_CONNECTION_TIMEOUT),
        **options,
    )


_PASSWORD = re.compile(r"(?P<prefix>://[^:/@]*:)(?P<password>[^@]*)(?P<at>@)")


def mask_url(url: str) -> str:
    """``amqp://user:secret@host`` -> ``amqp://user:**@host``: never log a password."""
    return _PASSWORD.sub(lambda m: f"{m['prefix']}**{m['at']}", url or "")
