"""Dead letters: messages that could not be processed, kept whole for inspection and replay.

A dead letter stores the raw message as JSON: the body as text (``body_encoding``
``"utf-8"``) or base64 (``"base64"``) exactly as it came off the wire, or as a
JSON value (``"json"``) when only the decoded body is at hand; plus headers,
properties, content type and encoding, and the delivery info. Whatever the bytes
are, storing never fails: values JSON cannot hold are kept as base64 or ``repr``.
"""

from __future__ import annotations

import base64
import logging
import math
from collections.abc import Mapping
from datetime import date, datetime, timedelta
from typing import Any

from django.db import router, transaction
from django.utils import timezone

from .exceptions import TasksQError

logger = logging.getLogger(__name__)

#: marker key for a header value kept as base64 (bytes, or text JSON cannot store)
BYTES_KEY = "__base64__"
#: the properties a replay publishes again (others belong to the old delivery)
REPLAYED_PROPERTIES = (
    "correlation_id",
    "reply_to",
    "expiration",
    "message_id",
    "user_id",
    "app_id",
)
#: headers a broker adds on delivery; a replay starts afresh without them
DELIVERY_HEADERS = ("x-delivery-count", "x-death", "x-first-death-", "x-last-death-")


class DeadLetterNotFound(TasksQError, LookupError):
    """No dead letter has that id (already replayed or purged?)."""


def _storable_text(text: str) -> bool:
    # PostgreSQL's jsonb refuses NUL; no database stores lone surrogates.
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def json_safe(value: Any, _depth: int = 0) -> Any:
    """``value`` as something every database's JSON column accepts."""
    if _depth > 50:
        return repr(value)
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, str):
        if _storable_text(value):
            return value
        return {BYTES_KEY: _b64(value.encode("utf-8", "surrogatepass"))}
    if isinstance(value, bytes | bytearray | memoryview):
        data = bytes(value)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            return {BYTES_KEY: _b64(data)}
        return text if _storable_text(text) else {BYTES_KEY: _b64(data)}
    if isinstance(value, Mapping):
        return {str(k): json_safe(v, _depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [json_safe(v, _depth + 1) for v in value]
    if isinstance(value, datetime | date):
        return value.isoformat()
    try:
        return repr(value)
    except Exception:
        return f"<unrepresentable {type(value).__name__}>"


def restore(value: Any) -> Any:
    """Undo :func:`json_safe`'s base64 markers (bytes come back as bytes, or text)."""
    if isinstance(value, dict):
        if set(value) == {BYTES_KEY}:
            data = base64.b64decode(value[BYTES_KEY])
            try:
                return data.decode("utf-8", "surrogatepass")
            except UnicodeDecodeError:
                return data
        return {k: restore(v) for k, v in value.items()}
    if isinstance(value, list):
        return [restore(v) for v in value]
    return value


def encode_body(body: Any) -> tuple[Any, str]:
    """``(stored body, body_encoding)`` for a raw or decoded message body."""
    if isinstance(body, bytes | bytearray | memoryview):
        data = bytes(body)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            return _b64(data), "base64"
        return (text, "utf-8") if _storable_text(text) else (_b64(data), "base64")
    if isinstance(body, str):
        if _storable_text(body):
            return body, "utf-8"
        return _b64(body.encode("utf-8", "surrogatepass")), "base64"
    return json_safe(body), "json"


def decode_body(body: Any, encoding: str) -> Any:
    """The body to publish again, from what :func:`encode_body` stored."""
    if encoding == "base64":
        return base64.b64decode(body)
    if encoding == "utf-8":
        return body.encode("utf-8") if isinstance(body, str) else body
    return body


def payload_from_message(message: Any) -> dict[str, Any]:
    """The payload dict of a kombu ``Message`` (or anything with the same attributes)."""
    return {
        "body": getattr(message, "body", None),
        "headers": getattr(message, "headers", None) or {},
        "properties": getattr(message, "properties", None) or {},
        "content_type": getattr(message, "content_type", None),
        "content_encoding": getattr(message, "content_encoding", None),
        "delivery_info": getattr(message, "delivery_info", None) or {},
    }


def _normalise(payload: Any) -> dict[str, Any]:
    if not isinstance(payload, Mapping):
        payload = payload_from_message(payload)
    payload = dict(payload)
    body, encoding = encode_body(payload.pop("body", None))
    payload.pop("body_encoding", None)
    stored = {str(k): json_safe(v) for k, v in payload.items()}
    stored["body"] = body
    stored["body_encoding"] = encoding
    for key in ("headers", "properties", "delivery_info"):
        if not isinstance(stored.get(key), dict):
            stored[key] = {} if stored.get(key) is None else {"value": stored[key]}
    return stored


def clean_text(value: Any, limit: int | None = None) -> str | None:
    """``value`` as text any database column stores (NUL and lone surrogates escaped)."""
    if value is None:
        return None
    text = value if isinstance(value, str) else repr(value)
    if not _storable_text(text):
        text = text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")
    return text if limit is None else text[:limit]


def dead_letter(
    payload: Any,
    reason: str,
    detail: str = "",
    task_id: str | None = None,
    task_name: str | None = None,
    queue: str | None = None,
) -> Any:
    """Store a message that cannot be processed; return the ``DeadLetter`` row.

    ``payload`` is a dict with ``body`` (bytes, text or a decoded value),
    ``headers``, ``properties``, ``content_type``, ``content_encoding`` and
    ``delivery_info`` (any may be missing), or a kombu ``Message``. The task id,
    name and queue are read from the headers and delivery info when not given.
    """
    from .models import DeadLetter

    stored = _normalise(payload)
    headers, delivery = stored["headers"], stored["delivery_info"]
    task_id = task_id or headers.get("id") or stored["properties"].get("correlation_id")
    task_name = task_name or headers.get("task")
    queue = queue or delivery.get("routing_key") or delivery.get("queue")
    return DeadLetter.objects.create(
        task_id=clean_text(task_id, 255),
        task_name=clean_text(task_name, 255),
        queue=clean_text(queue, 200),
        reason=clean_text(reason, 100) or "unknown",
        detail=clean_text(detail) or "",
        payload=stored,
    )


def replay(dead_letter_id: int, queue: str | None = None) -> Any:
    """Publish a dead letter again to its queue (or ``queue``), then delete it.

    Returns the row as it was. The row is locked while it is published, so two
    replays of one dead letter publish once; with the ``django://`` broker the
    publish and the delete commit together.
    """
    from .conf import settings
    from .message import EncodedMessage
    from .messaging.producer import get_publisher
    from .models import DeadLetter

    with transaction.atomic(using=router.db_for_write(DeadLetter)):
        try:
            row = DeadLetter.objects.select_for_update().get(pk=dead_letter_id)
        except (DeadLetter.DoesNotExist, ValueError, TypeError):
            raise DeadLetterNotFound(
                f"No dead letter with id {dead_letter_id!r}; `manage.py tasks_q deadletters list` shows them."
            ) from None
        stored = row.payload or {}
        target = queue or row.queue or settings.DEFAULT_QUEUE
        properties = restore(stored.get("properties") or {})
        encoded = EncodedMessage(
            body=_replay_body(stored),
            content_type=stored.get("content_type") or "application/json",
            content_encoding=stored.get("content_encoding") or "utf-8",
            headers=_replay_headers(stored.get("headers") or {}),
            properties={
                k: properties[k] for k in REPLAYED_PROPERTIES if properties.get(k) is not None
            },
        )
        priority = properties.get("priority")
        get_publisher().publish(
            encoded, target, priority=priority if isinstance(priority, int) else None
        )
        row.delete()
    logger.info(
        "Replayed dead letter %s (task %s) to queue %r", dead_letter_id, row.task_id, target
    )
    return row


def _replay_headers(headers: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in restore(headers).items() if not k.startswith(DELIVERY_HEADERS)}


def _replay_body(stored: dict[str, Any]) -> Any:
    encoding = stored.get("body_encoding") or "utf-8"
    body = decode_body(stored.get("body"), encoding)
    if encoding != "json":
        return body
    from .serialization import dumps

    content_type = stored.get("content_type") or "application/json"
    serializer = {
        "application/json": "json",
        "application/x-yaml": "yaml",
        "application/x-msgpack": "msgpack",
    }.get(content_type, "json")
    return dumps(restore(body), serializer)[2]


def purge_dead_letters(older_than: float | timedelta | datetime | None = None) -> int:
    """Delete dead letters (only those older than ``older_than`` when given); return the count."""
    from .cleanup import delete_in_chunks
    from .models import DeadLetter

    qs = DeadLetter.objects.all()
    if older_than is not None:
        if isinstance(older_than, datetime):
            cutoff = older_than
        elif isinstance(older_than, timedelta):
            cutoff = timezone.now() - older_than
        elif (
            isinstance(older_than, int | float)
            and not isinstance(older_than, bool)
            and older_than >= 0
        ):
            cutoff = timezone.now() - timedelta(seconds=float(older_than))
        else:
            raise ValueError(
                f"older_than must be seconds, a timedelta or a datetime, got {older_than!r}"
            )
        qs = qs.filter(date_created__lt=cutoff)
    return delete_in_chunks(qs)
