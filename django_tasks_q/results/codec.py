"""JSON for result content: kombu's encoder, so datetimes, Decimals and UUIDs round-trip.

The same encoder/decoder pair is used by the ``TaskResult`` JSON columns and by the
Redis stores, so a value reads back as the same Python type from every store.
"""

from __future__ import annotations

import json
from typing import Any

from kombu.utils.json import JSONEncoder as _KombuJSONEncoder
from kombu.utils.json import object_hook as _kombu_object_hook

from ..exceptions import EncodeError


class ResultJSONEncoder(_KombuJSONEncoder):
    """Encodes datetime, date, time, Decimal, UUID and bytes with kombu's type markers."""


def _object_hook(obj: dict) -> Any:
    try:
        return _kombu_object_hook(obj)
    except ValueError:  # a user dict that merely looks like a marker: keep it as it is
        return obj


class ResultJSONDecoder(json.JSONDecoder):
    """Revives kombu's type markers; leaves unknown markers as plain dicts."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("object_hook", _object_hook)
        super().__init__(*args, **kwargs)


# One instance each, shared: both are stateless between calls (and so thread-safe), and
# building one per call costs more than encoding or decoding a small value.
_encoder = ResultJSONEncoder(separators=(",", ":"))
_decoder = ResultJSONDecoder()


def dumps(value: Any) -> str:
    """Encode ``value``; raise :class:`EncodeError` when it is not JSON-serialisable."""
    if value is None:
        return "null"
    try:
        return _encoder.encode(value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise EncodeError(str(exc)) from exc


def loads(data: str | bytes | None) -> Any:
    if data is None:
        return None
    if isinstance(data, bytes | bytearray | memoryview):
        data = bytes(data).decode("utf-8")
    if data == "null":
        return None
    return _decoder.decode(data)


def capped(value: Any, limit: int | None) -> Any:
    """``value`` unchanged when its JSON fits in ``limit`` bytes, else a truncated repr.

    Values that cannot be encoded at all are replaced by their (truncated) repr too:
    args and kwargs are informational on a result row and must never fail a write.
    """
    if value is None:
        return None
    try:
        size = len(dumps(value).encode("utf-8"))
    except EncodeError:
        size = None
    if size is not None and (limit is None or size <= limit):
        return value
    text = repr(value)
    if limit is not None and len(text) > limit:
        text = text[: max(limit - 40, 0)] + f"... (truncated, {size or len(text)} bytes)"
    return text
