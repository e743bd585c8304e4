"""Dead letters keep any message whole: weird bytes, odd headers, NUL characters."""

from __future__ import annotations

import base64
from datetime import timedelta

import pytest
from django.utils import timezone

from django_tasks_q.deadletter import (
    BYTES_KEY,
    DeadLetterNotFound,
    dead_letter,
    decode_body,
    encode_body,
    json_safe,
    purge_dead_letters,
    replay,
    restore,
)
from django_tasks_q.models import DeadLetter


@pytest.mark.parametrize(
    ("body", "stored", "encoding"),
    [
        (b"[[1], {}, {}]", "[[1], {}, {}]", "utf-8"),
        ("text body", "text body", "utf-8"),
        (b"\xff\xfe\x00binary", base64.b64encode(b"\xff\xfe\x00binary").decode(), "base64"),
        ("nul\x00inside", base64.b64encode(b"nul\x00inside").decode(), "base64"),
        ([[1, 2], {"a": 1}, {}], [[1, 2], {"a": 1}, {}], "json"),
        (None, None, "json"),
    ],
)
def test_bodies_are_stored_in_a_form_every_database_accepts(body, stored, encoding) -> None:
    assert encode_body(body) == (stored, encoding)


@pytest.mark.parametrize("body", [b"\x00\x01\xff", "plain", b'{"a": 1}', "lone \udcff surrogate"])
def test_raw_bodies_come_back_byte_for_byte(body) -> None:
    stored, encoding = encode_body(body)
    raw = body if isinstance(body, bytes) else body.encode("utf-8", "surrogatepass")
    assert decode_body(stored, encoding) == raw


def test_json_safe_handles_anything() -> None:
    class Odd:
        def __repr__(self) -> str:
            return "<odd>"

    value = {
        "bytes": b"\xff", "text_bytes": b"ok", "nul": "a\x00b", "nan": float("inf"),
        3: (1, 2), "set": {1}, "obj": Odd(), "when": timezone.datetime(2030, 1, 1),
    }  # fmt: skip
    safe = json_safe(value)
    assert safe["bytes"] == {BYTES_KEY: base64.b64encode(b"\xff").decode()}
    assert safe["text_bytes"] == "ok"
    assert safe["nul"] == {BYTES_KEY: base64.b64encode(b"a\x00b").decode()}
    assert safe["nan"] == "inf"
    assert safe["3"] == [1, 2]
    assert safe["set"] == [1]
    assert safe["obj"] == "<odd>"
    assert safe["when"] == "2030-01-01T00:00:00"
    assert restore(safe["bytes"]) == b"\xff"
    assert restore(safe["nul"]) == "a\x00b"


@pytest.mark.django_db
def test_dead_letter_stores_weird_messages_without_crashing() -> None:
    payload = {
        "body": b"\x80\x81 not utf-8 \x00",
        "headers": {"id": "dl-1", "task": "demo.add", "blob": b"\xfe", "nul": "x\x00"},
        "properties": {"correlation_id": "dl-1", "delivery_tag": b"\x01"},
        "content_type": "application/x-weird",
        "content_encoding": "binary",
        "delivery_info": {"routing_key": "images", "exchange": "images"},
    }
    row = dead_letter(payload, reason="decode-error", detail="bad \x00 bytes \udcff")
    row.refresh_from_db()

    assert (row.task_id, row.task_name, row.queue, row.reason) == (
        "dl-1",
        "demo.add",
        "images",
        "decode-error",
    )
    assert row.detail == "bad \\x00 bytes \\udcff"
    assert row.payload["body_encoding"] == "base64"
    assert base64.b64decode(row.payload["body"]) == payload["body"]
    assert restore(row.payload["headers"])["blob"] == b"\xfe"
    assert row.payload["content_type"] == "application/x-weird"


@pytest.mark.django_db
def test_dead_letter_accepts_a_kombu_like_message() -> None:
    class Message:
        body = b"[[2, 2], {}, {}]"
        headers = {"id": "k-1", "task": "demo.add"}
        properties = {"correlation_id": "k-1"}
        content_type = "application/json"
        content_encoding = "utf-8"
        delivery_info = {"routing_key": "default"}

    row = dead_letter(Message(), reason="max-deliveries", task_name="override.name")
    assert (row.task_id, row.task_name, row.queue) == ("k-1", "override.name", "default")
    assert row.payload["body"] == "[[2, 2], {}, {}]"


@pytest.mark.django_db
def test_replay_of_a_missing_dead_letter_names_the_id() -> None:
    with pytest.raises(DeadLetterNotFound, match="No dead letter with id 999"):
        replay(999)


@pytest.mark.django_db
def test_purge_dead_letters_by_age() -> None:
    old = dead_letter({"body": "x"}, reason="r")
    DeadLetter.objects.filter(pk=old.pk).update(date_created=timezone.now() - timedelta(hours=2))
    dead_letter({"body": "y"}, reason="r")

    assert purge_dead_letters(older_than=3600) == 1
    assert DeadLetter.objects.count() == 1
    assert purge_dead_letters() == 1
    assert DeadLetter.objects.count() == 0
    with pytest.raises(ValueError, match="older_than must be"):
        purge_dead_letters(older_than="yesterday")
