"""Celery's task message protocol v2 <-> a typed ``Message``.

A protocol-v2 message is three parts:

* properties: ``correlation_id`` (the task id), ``content_type``,
  ``content_encoding``, optional ``reply_to``, ``priority``;
* headers: ``lang``, ``task``, ``id``, ``root_id``, ``parent_id``, ``group``,
  and optionally ``shadow``, ``eta``, ``expires``, ``retries``, ``timelimit``,
  ``argsrepr``, ``kwargsrepr``, ``origin``, ``ignore_result``...;
* body: ``[args, kwargs, embed]`` where embed holds ``callbacks``,
  ``errbacks``, ``chain`` and ``chord``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from kombu.serialization import registry
from kombu.utils import json as kombu_json

from .exceptions import EncodeError, InvalidMessage, MessageTooLarge
from .serialization import dumps, loads

REQUIRED_HEADERS = ("task", "id")
_KNOWN_HEADERS = frozenset(
    {
        "lang", "task", "id", "root_id", "parent_id", "group", "group_index", "shadow", "eta",
        "expires", "retries", "timelimit", "argsrepr", "kwargsrepr", "origin",
        "ignore_result", "replaced_task_nesting", "stamped_headers", "stamps", "meth",
    }
)  # fmt: skip


def new_id(_urandom: Any = os.urandom) -> str:
    """A random (version 4) UUID as text, as ``str(uuid.uuid4())`` gives, in a third of the time."""
    h = _urandom(16).hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"


def _json_encoder() -> Any:
    """``obj -> str`` exactly as ``kombu.utils.json.dumps`` encodes, without its per-call setup.

    kombu builds a ``JSONEncoder`` and a C encoder for every call; this builds them
    once.  The C encoder runs without a circular-reference memo (a memo cannot be
    shared between threads), so a circular argument fails with RecursionError
    instead of ValueError: either way, an EncodeError for the caller.
    """
    encoder = kombu_json.JSONEncoder()
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # no C accelerator: the plain path
        return encoder.encode
    chunks = make(
        None, encoder.default, json.encoder.encode_basestring_ascii, None, ": ", ", ",
        False, False, True,
    )  # fmt: skip

    def encode(obj: Any) -> str:
        return "".join(chunks(obj, 0))

    return encode


#: kombu-compatible JSON text of an object (message bodies, kombu envelopes)
json_dumps = _json_encoder()


def encode_body(body: Any, serializer: str) -> tuple[str, str, bytes | str]:
    """``(content_type, content_encoding, data)``: kombu's serializer, JSON without its per-call setup."""
    if serializer == "json":
        codec = registry._encoders.get("json")
        if codec is not None and codec[2] is kombu_json.dumps:  # kombu's own JSON, not replaced
            try:
                return codec[0], codec[1], json_dumps(body)
            except Exception as exc:
                raise EncodeError(f"Could not encode with 'json': {exc}") from exc
    return dumps(body, serializer)


def _iso(value: datetime | str | None) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return value.isoformat()


def parse_iso(value: str | datetime | None) -> datetime | None:
    """Parse an ISO-8601 header into an aware datetime (naive values are taken as UTC)."""
    if value is None or isinstance(value, datetime):
        dt = value
    else:
        try:
            dt = datetime.fromisoformat(value)
        except (TypeError, ValueError) as exc:
            raise InvalidMessage(f"Header date {value!r} is not ISO-8601") from exc
    if dt is not None and dt.tzinfo is None:
        from datetime import UTC

        dt = dt.replace(tzinfo=UTC)
    return dt


@dataclass
class Message:
    """One task message, independent of broker and encoding."""

    task: str
    id: str = field(default_factory=new_id)
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    callbacks: list[dict] | None = None
    errbacks: list[dict] | None = None
    chain: list[dict] | None = None
    chord: dict | None = None
    root_id: str | None = None
    parent_id: str | None = None
    group: str | None = None
    group_index: int | None = None
    shadow: str | None = None
    eta: datetime | None = None
    expires: datetime | None = None
    retries: int = 0
    #: ``(hard, soft)`` seconds, in Celery's order (``[time_limit, soft_time_limit]``)
    timelimit: tuple[float | None, float | None] = (None, None)
    argsrepr: str | None = None
    kwargsrepr: str | None = None
    origin: str | None = None
    ignore_result: bool = False
    reply_to: str | None = None
    correlation_id: str | None = None
    priority: int | None = None
    extra_headers: dict[str, Any] = field(default_factory=dict)

    # -- protocol v2 ------------------------------------------------------
    def headers(self) -> dict[str, Any]:
        headers: dict[str, Any] = {
            "lang": "py",
            "task": self.task,
            "id": self.id,
            "shadow": self.shadow,
            "eta": _iso(self.eta),
            "expires": _iso(self.expires),
            "group": self.group,
            "group_index": self.group_index,
            "retries": self.retries,
            "timelimit": list(self.timelimit),
            "root_id": self.root_id or self.id,
            "parent_id": self.parent_id,
            "argsrepr": self.argsrepr if self.argsrepr is not None else _safe_repr(self.args),
            "kwargsrepr": (
                self.kwargsrepr if self.kwargsrepr is not None else _safe_repr(self.kwargs)
            ),
            "origin": self.origin,
            "ignore_result": self.ignore_result,
        }
        headers.update(self.extra_headers)
        return headers

    def embed(self) -> dict[str, Any]:
        return {
            "callbacks": self.callbacks,
            "errbacks": self.errbacks,
            "chain": self.chain,
            "chord": self.chord,
        }

    def body(self) -> tuple[list, dict, dict]:
        return (list(self.args), dict(self.kwargs), self.embed())

    def properties(self) -> dict[str, Any]:
        props: dict[str, Any] = {"correlation_id": self.correlation_id or self.id}
        if self.reply_to:
            props["reply_to"] = self.reply_to
        if self.priority is not None:
            props["priority"] = self.priority
        return props

    def encode(self, serializer: str = "json", max_size: int | None = None) -> EncodedMessage:
        body = (self.args, self.kwargs, self.embed())  # encoding reads, never changes them
        content_type, content_encoding, data = encode_body(body, serializer)
        size = len(data)
        if max_size is not None and size > max_size:
            raise MessageTooLarge(
                f"Message for task {self.task!r} (id {self.id}) is {size} bytes, over "
                f"MESSAGE_MAX_SIZE={max_size}. Pass a reference (a primary key, a file path) "
                "instead of the data, or raise TASKS_Q['MESSAGE_MAX_SIZE']."
            )
        return EncodedMessage(
            body=data,
            content_type=content_type,
            content_encoding=content_encoding,
            headers=self.headers(),
            properties=self.properties(),
        )

    @classmethod
    def from_parts(
        cls, headers: dict[str, Any] | None, properties: dict[str, Any] | None, body: Any
    ) -> Message:
        """Build a Message from decoded protocol-v2 parts; raise InvalidMessage if malformed."""
        headers = headers or {}
        properties = properties or {}
        missing = [h for h in REQUIRED_HEADERS if not headers.get(h)]
        if missing:
            raise InvalidMessage(
                f"Message is missing protocol-v2 header(s) {missing}: every task message needs "
                "'task' (the task name) and 'id' (the task id)."
            )
        if not isinstance(headers["task"], str):
            raise InvalidMessage(f"Header 'task' must be a string, got {headers['task']!r}")
        args, kwargs, embed = _split_body(body, headers["task"])
        timelimit = headers.get("timelimit") or (None, None)
        if not isinstance(timelimit, list | tuple) or len(timelimit) != 2:
            raise InvalidMessage(
                f"Header 'timelimit' must be [hard, soft] (seconds or null), got {timelimit!r}"
            )
        retries = headers.get("retries") or 0
        if not isinstance(retries, int):
            raise InvalidMessage(f"Header 'retries' must be an integer, got {retries!r}")
        extra = {k: v for k, v in headers.items() if k not in _KNOWN_HEADERS}
        for key in ("stamped_headers", "stamps", "replaced_task_nesting"):
            if key in headers:
                extra[key] = headers[key]
        return cls(
            task=headers["task"],
            id=str(headers["id"]),
            args=args,
            kwargs=kwargs,
            callbacks=embed.get("callbacks"),
            errbacks=embed.get("errbacks"),
            chain=embed.get("chain"),
            chord=embed.get("chord"),
            root_id=headers.get("root_id"),
            parent_id=headers.get("parent_id"),
            group=headers.get("group"),
            group_index=headers.get("group_index"),
            shadow=headers.get("shadow"),
            eta=parse_iso(headers.get("eta")),
            expires=parse_iso(headers.get("expires")),
            retries=retries,
            timelimit=(timelimit[0], timelimit[1]),
            argsrepr=headers.get("argsrepr"),
            kwargsrepr=headers.get("kwargsrepr"),
            origin=headers.get("origin"),
            ignore_result=bool(headers.get("ignore_result", False)),
            reply_to=properties.get("reply_to"),
            correlation_id=properties.get("correlation_id"),
            priority=properties.get("priority")
            if properties.get("priority") is not None
            else (properties.get("delivery_info") or {}).get("priority"),
            extra_headers=extra,
        )

    @classmethod
    def decode(
        cls,
        body: bytes | str,
        content_type: str,
        content_encoding: str,
        headers: dict[str, Any] | None,
        properties: dict[str, Any] | None,
        accept: set[str],
    ) -> Message:
        return cls.from_parts(
            headers, properties, loads(body, content_type, content_encoding, accept)
        )

    @property
    def name(self) -> str:
        return self.shadow or self.task


@dataclass
class EncodedMessage:
    body: bytes | str
    content_type: str
    content_encoding: str
    headers: dict[str, Any]
    properties: dict[str, Any]


def _split_body(body: Any, task: str) -> tuple[list, dict, dict]:
    if isinstance(body, list | tuple) and len(body) == 3:
        args, kwargs, embed = body
    elif isinstance(body, list | tuple) and len(body) == 2:
        (args, kwargs), embed = body, {}
    else:
        raise InvalidMessage(
            f"Body of task {task!r} must be [args, kwargs, embed] (protocol v2), "
            f"got {type(body).__name__}"
        )
    if not isinstance(args, list | tuple):
        raise InvalidMessage(
            f"Body args of task {task!r} must be a list, got {type(args).__name__}"
        )
    if not isinstance(kwargs, dict):
        raise InvalidMessage(
            f"Body kwargs of task {task!r} must be a mapping, got {type(kwargs).__name__}"
        )
    if embed is None:
        embed = {}
    if not isinstance(embed, dict):
        raise InvalidMessage(f"Body embed of task {task!r} must be a mapping, got {embed!r}")
    return list(args), dict(kwargs), embed


def _safe_repr(value: Any, limit: int = 1024) -> str:
    try:
        text = repr(value)
    except Exception:
        text = "<unrepresentable>"
    return text if len(text) <= limit else text[: limit - 3] + "..."
