"""kombu message dicts <-> ``django://`` row payloads.

A row stores kombu's message as JSON: body, content type and encoding, headers
and properties. Text bodies (JSON, YAML) are stored as they are, so rows stay
readable; binary bodies (msgpack, pickle) are stored base64-encoded. On the way
out a delivery gets a fresh delivery tag, its row id, the ``x-delivery-count``
header and ``delivery_info['redelivered']``.
"""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings as django_settings
from django.utils import timezone

from ..conf import settings
from ..exceptions import InvalidMessage
from ..message import parse_iso
from .database_sql import now

#: Header carrying how many times the row has been delivered (1 on first delivery).
DELIVERY_COUNT_HEADER = "x-delivery-count"
#: ``delivery_info`` key carrying the row id.
ROW_KEY = "tasks_q_row"


def to_row(message: dict[str, Any]) -> tuple[dict[str, Any], datetime, str | None]:
    """``(payload, visible_at, task_id)`` for a message kombu is publishing.

    The message is not modified: kombu may publish the same dict to several queues.
    """
    properties = dict(message.get("properties") or {})
    properties.pop("delivery_tag", None)
    headers = message.get("headers") or {}
    visible_at = _visible_at(properties.pop("visible_at", None), headers)
    body = message.get("body")
    if isinstance(body, bytes | bytearray | memoryview):
        body = base64.b64encode(bytes(body)).decode("ascii")
        properties["body_encoding"] = "base64"
    payload = {
        "body": body,
        "content-encoding": message.get("content-encoding"),
        "content-type": message.get("content-type"),
        "headers": headers,
        "properties": properties,
    }
    task_id = headers.get("id") if isinstance(headers.get("id"), str) else None
    return payload, visible_at, task_id


def to_delivery(payload: dict[str, Any], row_id: int | None, delivery_count: int) -> dict[str, Any]:
    """Turn a stored payload (freshly decoded, so ours to change) into a kombu raw message."""
    properties = payload.setdefault("properties", {})
    info = dict(properties.get("delivery_info") or {})
    info[ROW_KEY] = row_id
    info["redelivered"] = delivery_count > 1
    properties["delivery_info"] = info
    properties["delivery_tag"] = str(uuid.uuid4())
    headers = payload.get("headers") or {}
    headers[DELIVERY_COUNT_HEADER] = delivery_count
    payload["headers"] = headers
    return payload


def _visible_at(explicit: Any, headers: dict[str, Any]) -> datetime:
    """When the row may be claimed.

    An explicit ``visible_at`` publish property wins. Otherwise a protocol-v2
    task whose ``eta`` header is more than ``ETA_HORIZON`` seconds away is held
    back until shortly before its ETA (a worker holds near ETAs in memory);
    everything else is visible now.
    """
    current = now()
    if explicit is not None:
        return _aligned(_parse_when(explicit, "visible_at"))
    eta_header = headers.get("eta")
    if not eta_header or "task" not in headers or "id" not in headers:
        return current
    try:
        eta = _aligned(parse_iso(eta_header))
    except InvalidMessage:
        return current  # the worker reports the malformed header
    horizon = float(settings.ETA_HORIZON)
    if eta is None or (eta - current).total_seconds() <= horizon:
        return current
    lead = min(horizon, max(1.0, 2 * float(settings.POLL_INTERVAL)))
    return eta - timedelta(seconds=lead)


def _parse_when(value: Any, name: str) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, tz=UTC)
    if isinstance(value, str):
        return parse_iso(value)
    raise InvalidMessage(
        f"Publish property {name!r} must be a datetime, an ISO-8601 string or a Unix "
        f"timestamp, got {type(value).__name__}"
    )


def _aligned(value: datetime) -> datetime:
    """An aware value in the form Django stores: aware with USE_TZ, naive local without."""
    if django_settings.USE_TZ:
        return value
    return timezone.make_naive(value) if timezone.is_aware(value) else value
