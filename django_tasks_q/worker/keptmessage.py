"""The running task's raw message, kept in shared memory for the prefork supervisor.

A child keeps the message of a task that has a hard time limit, errbacks or a
chord (``Slot.keep_message``). If the supervisor kills that child, or finds it
dead, it rebuilds the request from these bytes to run the task's failure
callbacks: the child can no longer do it.
"""

from __future__ import annotations

import base64
import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..request import Request
    from .worker import Worker


def encode(raw: Any, queue: str) -> bytes:
    """A raw kombu message as JSON bytes."""
    body = raw.body
    encoding = "utf-8"
    if isinstance(body, bytes | bytearray | memoryview):
        try:
            body = bytes(body).decode("utf-8")
        except UnicodeDecodeError:
            body, encoding = base64.b64encode(bytes(body)).decode("ascii"), "base64"
    properties = raw.properties or {}
    return json.dumps(
        {
            "body": body,
            "body_encoding": encoding,
            "content_type": raw.content_type,
            "content_encoding": raw.content_encoding,
            "headers": raw.headers or {},
            "properties": {
                k: properties.get(k) for k in ("correlation_id", "reply_to", "priority")
            },
            "queue": queue,
        },
        default=str,
    ).encode()


def rebuild_request(data: bytes, worker: Worker) -> Request:
    """The request of a kept message, as the child saw it."""
    from ..message import Message
    from ..request import Request

    raw = json.loads(data)
    body = raw["body"]
    if raw.get("body_encoding") == "base64":
        body = base64.b64decode(body)
    message = Message.decode(
        body,
        raw["content_type"],
        raw["content_encoding"],
        raw["headers"],
        raw["properties"],
        worker.accept,
    )
    return Request.from_message(
        message,
        hostname=worker.hostname,
        delivery_info={"routing_key": raw.get("queue"), "queue": raw.get("queue")},
    )
