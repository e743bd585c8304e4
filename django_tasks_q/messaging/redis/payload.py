"""kombu's JSON envelope as stored in Redis: delivery counts and ETAs.

The payload bytes a publisher wrote are kept untouched while a message is in
flight.  Only when a delivered message goes back to its queue is it rewritten,
with header ``x-delivery-count`` = deliveries so far; the next claim hands it
out with that number plus one.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from kombu.utils.json import dumps, loads

from ...exceptions import InvalidMessage
from ...message import parse_iso

logger = logging.getLogger("django_tasks_q.messaging.redis")

DELIVERY_COUNT = "x-delivery-count"


def decode(raw: bytes) -> dict[str, Any] | None:
    """The envelope dict, or None when ``raw`` is not a kombu JSON envelope."""
    try:
        payload = loads(raw)
    except (TypeError, ValueError, UnicodeDecodeError):
        return None
    if not isinstance(payload, dict) or not isinstance(payload.get("properties"), dict):
        return None
    return payload


def _headers(payload: dict[str, Any]) -> dict[str, Any]:
    headers = payload.get("headers")
    if not isinstance(headers, dict):
        headers = payload["headers"] = {}
    return headers


def prior_deliveries(payload: dict[str, Any]) -> int:
    try:
        return max(int(_headers(payload).get(DELIVERY_COUNT) or 0), 0)
    except (TypeError, ValueError):
        return 0


def prepare_delivery(payload: dict[str, Any], tag: str) -> int:
    """Stamp a freshly claimed envelope for kombu; return its delivery count."""
    count = prior_deliveries(payload) + 1
    _headers(payload)[DELIVERY_COUNT] = count
    properties = payload["properties"]
    properties["delivery_tag"] = tag
    info = properties.get("delivery_info")
    if not isinstance(info, dict):
        info = properties["delivery_info"] = {}
    info["redelivered"] = count > 1 or bool(info.get("redelivered"))
    return count


def after_delivery(raw: bytes) -> bytes:
    """``raw`` rewritten to count one more delivery (raw itself if unreadable)."""
    payload = decode(raw)
    if payload is None:
        return raw
    _headers(payload)[DELIVERY_COUNT] = prior_deliveries(payload) + 1
    return dumps(payload).encode()


@dataclass(frozen=True)
class Eta:
    """Where a message with an ``eta`` header waits: its member and due time."""

    member: str
    timestamp: float


def far_eta(payload: dict[str, Any], horizon: float, now: float | None = None) -> Eta | None:
    """The delayed-store entry for ``payload`` if its ETA is beyond ``horizon`` seconds."""
    headers = payload.get("headers")
    if not isinstance(headers, dict) or not headers.get("eta"):
        return None
    try:
        due = parse_iso(headers["eta"])
    except InvalidMessage:
        logger.warning(
            "Message %s has an unreadable eta %r; delivering it now.",
            headers.get("id"),
            headers["eta"],
        )
        return None
    if due is None:
        return None
    timestamp = due.timestamp()
    if timestamp - (time.time() if now is None else now) <= horizon:
        return None
    task_id = headers.get("id") or payload["properties"].get("correlation_id")
    task_id = task_id or payload["properties"].get("delivery_tag") or ""
    return Eta(member=f"{task_id}|{headers['eta']}", timestamp=timestamp)
