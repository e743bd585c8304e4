"""Protocol v2 <-> Message: round trips, malformed input, size cap, content types."""

from __future__ import annotations

import json
import pickle
from datetime import UTC, datetime, timedelta

import pytest

from django_tasks_q.exceptions import (
    ContentDisallowed,
    DecodeError,
    EncodeError,
    InvalidMessage,
    MessageTooLarge,
)
from django_tasks_q.message import Message
from django_tasks_q.serialization import accepted_types, content_type_of

JSON = accepted_types(["json"])


def full_message() -> Message:
    now = datetime(2030, 1, 2, 3, 4, 5, 600000, tzinfo=UTC)
    return Message(
        task="proj.tasks.add",
        id="6f1c1e9e-1111-4c5a-9d0e-000000000001",
        args=[1, "two", [3]],
        kwargs={"x": {"y": None}},
        callbacks=[{"task": "proj.tasks.log", "args": [], "kwargs": {}, "options": {}}],
        errbacks=[{"task": "proj.tasks.oops", "args": [], "kwargs": {}, "options": {}}],
        chain=[{"task": "proj.tasks.mul", "args": [8], "kwargs": {}, "options": {}}],
        chord={"task": "proj.tasks.xsum", "args": [], "kwargs": {}, "options": {}},
        root_id="root-1",
        parent_id="parent-1",
        group="group-1",
        group_index=3,
        shadow="add-shadow",
        eta=now,
        expires=now + timedelta(hours=1),
        retries=2,
        timelimit=(20.0, 10.0),
        origin="gen1@host",
        ignore_result=True,
        reply_to="reply-q",
        correlation_id="6f1c1e9e-1111-4c5a-9d0e-000000000001",
        priority=5,
        extra_headers={"custom": "value", "periodic_task_name": "nightly"},
    )


def roundtrip(message: Message, serializer: str = "json", accept=JSON) -> Message:
    enc = message.encode(serializer)
    return Message.decode(
        enc.body, enc.content_type, enc.content_encoding, enc.headers, enc.properties, accept
    )


# -- encoding ------------------------------------------------------------------
def test_encode_produces_protocol_v2_parts():
    enc = full_message().encode("json")
    assert enc.content_type == "application/json"
    assert enc.content_encoding == "utf-8"
    args, kwargs, embed = json.loads(enc.body)
    assert args == [1, "two", [3]]
    assert kwargs == {"x": {"y": None}}
    assert set(embed) == {"callbacks", "errbacks", "chain", "chord"}
    h = enc.headers
    assert h["lang"] == "py"
    assert h["task"] == "proj.tasks.add"
    assert h["id"] == "6f1c1e9e-1111-4c5a-9d0e-000000000001"
    assert h["eta"] == "2030-01-02T03:04:05.600000+00:00"
    assert h["retries"] == 2
    assert h["timelimit"] == [20.0, 10.0]
    assert h["argsrepr"] == "[1, 'two', [3]]"
    assert h["custom"] == "value"
    assert enc.properties == {
        "correlation_id": "6f1c1e9e-1111-4c5a-9d0e-000000000001",
        "reply_to": "reply-q",
        "priority": 5,
    }


def test_minimal_message_defaults():
    m = Message(task="t")
    h = m.headers()
    assert h["root_id"] == m.id  # a message with no parent is its own root
    assert h["parent_id"] is None
    assert h["eta"] is None and h["expires"] is None
    assert m.properties() == {"correlation_id": m.id}


def test_round_trip_keeps_every_field():
    original = full_message()
    decoded = roundtrip(original)
    for name in (
        "task", "id", "args", "kwargs", "callbacks", "errbacks", "chain", "chord", "root_id",
        "parent_id", "group", "group_index", "shadow", "eta", "expires", "retries", "timelimit",
        "origin", "ignore_result", "reply_to", "correlation_id", "priority",
    ):  # fmt: skip
        assert getattr(decoded, name) == getattr(original, name), name
    assert decoded.extra_headers["custom"] == "value"
    assert decoded.extra_headers["periodic_task_name"] == "nightly"
    assert decoded.name == "add-shadow"


def test_naive_dates_are_read_as_utc():
    headers = {"task": "t", "id": "1", "eta": "2030-01-01T00:00:00"}
    m = Message.from_parts(headers, {}, [[], {}, {}])
    assert m.eta == datetime(2030, 1, 1, tzinfo=UTC)


def test_two_part_body_and_null_embed_are_accepted():
    m = Message.from_parts({"task": "t", "id": "1"}, {}, [[1], {"a": 2}])
    assert (m.args, m.kwargs, m.callbacks) == ([1], {"a": 2}, None)
    m = Message.from_parts({"task": "t", "id": "1"}, {}, [[1], {}, None])
    assert m.chain is None


def test_priority_falls_back_to_delivery_info():
    m = Message.from_parts({"task": "t", "id": "1"}, {"delivery_info": {"priority": 7}}, [[], {}, {}])
    assert m.priority == 7


@pytest.mark.parametrize("serializer", ["msgpack", "yaml"])
def test_msgpack_and_yaml_round_trip_when_accepted(serializer):
    pytest.importorskip(serializer)
    m = Message(task="t", args=[1, "a"], kwargs={"k": [1, 2]})
    decoded = roundtrip(m, serializer, accepted_types(["json", serializer]))
    assert (decoded.args, decoded.kwargs) == ([1, "a"], {"k": [1, 2]})


# -- malformed messages ----------------------------------------------------------
GOOD_HEADERS = {"task": "proj.add", "id": "abc"}


@pytest.mark.parametrize(
    "headers, body, text",
    [
        ({"id": "abc"}, [[], {}, {}], "missing protocol-v2 header(s) ['task']"),
        ({"task": "proj.add"}, [[], {}, {}], "missing protocol-v2 header(s) ['id']"),
        ({}, [[], {}, {}], "['task', 'id']"),
        (None, [[], {}, {}], "['task', 'id']"),
        ({"task": 3, "id": "abc"}, [[], {}, {}], "Header 'task' must be a string"),
        (GOOD_HEADERS, {"args": []}, "must be [args, kwargs, embed] (protocol v2), got dict"),
        (GOOD_HEADERS, [[], {}, {}, {}], "must be [args, kwargs, embed]"),
        (GOOD_HEADERS, "text", "got str"),
        (GOOD_HEADERS, [{}, {}, {}], "Body args of task 'proj.add' must be a list, got dict"),
        (GOOD_HEADERS, [[], [], {}], "Body kwargs of task 'proj.add' must be a mapping, got list"),
        (GOOD_HEADERS, [[], {}, [1]], "Body embed of task 'proj.add' must be a mapping"),
        ({**GOOD_HEADERS, "timelimit": [1]}, [[], {}, {}], "Header 'timelimit' must be [hard, soft]"),
        ({**GOOD_HEADERS, "timelimit": 5}, [[], {}, {}], "Header 'timelimit' must be [hard, soft]"),
        ({**GOOD_HEADERS, "retries": "2"}, [[], {}, {}], "Header 'retries' must be an integer"),
        ({**GOOD_HEADERS, "eta": "tomorrow"}, [[], {}, {}], "Header date 'tomorrow' is not ISO-8601"),
        ({**GOOD_HEADERS, "expires": 12}, [[], {}, {}], "Header date 12 is not ISO-8601"),
    ],
)
def test_malformed_parts_raise_invalid_message_with_clear_text(headers, body, text):
    with pytest.raises(InvalidMessage) as err:
        Message.from_parts(headers, {}, body)
    assert text in str(err.value)
    assert isinstance(err.value, DecodeError)  # callers may catch the broader class


def test_body_that_is_not_json_raises_decode_error():
    with pytest.raises(DecodeError, match="Could not decode application/json body"):
        Message.decode(b"{not json", "application/json", "utf-8", GOOD_HEADERS, {}, JSON)


def test_content_type_outside_accept_is_refused_by_name():
    with pytest.raises(ContentDisallowed) as err:
        Message.decode(b"\x80", "application/x-msgpack", "binary", GOOD_HEADERS, {}, JSON)
    text = str(err.value)
    assert "'application/x-msgpack'" in text and "ACCEPT_CONTENT" in text


UNPICKLED: list[str] = []


def _mark_unpickled() -> str:
    UNPICKLED.append("ran")
    return "ran"


class _Evil:
    def __reduce__(self):
        return (_mark_unpickled, ())


def test_pickle_is_refused_by_default_and_never_unpickled():
    payload = pickle.dumps(([_Evil()], {}, {}))
    with pytest.raises(ContentDisallowed, match="application/x-python-serialize"):
        Message.decode(payload, "application/x-python-serialize", "binary", GOOD_HEADERS, {}, JSON)
    assert UNPICKLED == []


@pytest.mark.parametrize("name", ["msgpack", "yaml"])
def test_msgpack_and_yaml_refused_unless_accepted(name):
    pytest.importorskip(name)
    enc = Message(task="t").encode(name)
    with pytest.raises(ContentDisallowed):
        Message.decode(enc.body, enc.content_type, enc.content_encoding, enc.headers, {}, JSON)


# -- encoding errors and size cap -----------------------------------------------------
def test_message_over_the_size_cap_is_refused_with_advice():
    m = Message(task="proj.big", args=["x" * 2000])
    with pytest.raises(MessageTooLarge) as err:
        m.encode("json", max_size=1000)
    text = str(err.value)
    assert "proj.big" in text and "MESSAGE_MAX_SIZE=1000" in text and "reference" in text
    assert isinstance(err.value, EncodeError)


def test_message_at_the_size_cap_passes():
    m = Message(task="t", args=["x" * 10])
    size = len(m.encode("json").body)
    assert len(m.encode("json", max_size=size).body) == size


def test_unencodable_argument_raises_encode_error():
    with pytest.raises(EncodeError, match="Could not encode with 'json'"):
        Message(task="t", args=[object()]).encode("json")


def test_unknown_serializer_names_the_known_ones():
    with pytest.raises(EncodeError) as err:
        content_type_of("jsn")
    assert "'jsn'" in str(err.value) and "json" in str(err.value)
