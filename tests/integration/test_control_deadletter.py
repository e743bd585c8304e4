"""Dead letters over real brokers: a consumed message is stored, replayed, and arrives unchanged."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from kombu import Consumer, Producer

from django_tasks_q.calling import send_task
from django_tasks_q.deadletter import dead_letter, replay
from django_tasks_q.messaging.connection import broker_connection
from django_tasks_q.messaging.producer import get_publisher
from django_tasks_q.models import DeadLetter
from tests.control_fakes import BROKERS, broker_url, isolated_broker


@pytest.fixture(params=BROKERS)
def queues(request: pytest.FixtureRequest, transactional_db: None) -> Iterator[list[str]]:
    with isolated_broker(broker_url(request.param)) as names:
        yield names


def take_one(queue: str, timeout: float = 10.0):
    """Consume one raw message from ``queue`` (no decoding: any content type), ack it."""
    _, entity = get_publisher().entities(queue)
    got = []
    conn = broker_connection()
    try:
        with Consumer(conn, [entity], on_message=got.append, no_ack=False):
            deadline = time.monotonic() + timeout
            while not got and time.monotonic() < deadline:
                try:
                    conn.drain_events(timeout=0.2)
                except TimeoutError:
                    pass
        assert got, f"no message arrived on {queue} within {timeout}s"
        message = got[0]
        snapshot = {
            "body": message.body,
            "headers": dict(message.headers),
            "content_type": message.content_type,
            "content_encoding": message.content_encoding,
            "correlation_id": message.properties.get("correlation_id"),
        }
        stored = dead_letter(message, reason="test", detail="round trip")
        message.ack()
        return snapshot, stored
    finally:
        conn.release()


def test_a_task_message_survives_dead_letter_and_replay(queues: list[str]) -> None:
    default, _ = queues
    # Given a task message that was dead-lettered when consumed
    result = send_task("demo.add", [2, 3], queue=default)
    original, row = take_one(default)
    assert (row.task_id, row.task_name, row.queue) == (result.id, "demo.add", default)

    # When it is replayed
    replay(row.pk)

    # Then the same message is back on its queue, and the dead letter is gone
    again, second = take_one(default)
    assert again["headers"] == original["headers"], {
        k: (again["headers"].get(k), v)
        for k, v in original["headers"].items()
        if again["headers"].get(k) != v
    } | {k: v for k, v in again["headers"].items() if k not in original["headers"]}
    assert again == original
    assert not DeadLetter.objects.filter(pk=row.pk).exists()
    second.delete()


def test_binary_bodies_replay_byte_for_byte_to_another_queue(queues: list[str]) -> None:
    default, images = queues
    body = b"\x00\xff\xfe raw \x80 bytes"
    exchange, entity = get_publisher().entities(default)
    conn = broker_connection()
    try:
        Producer(conn).publish(
            body, exchange=exchange, routing_key=default, declare=[entity],
            content_type="application/octet-stream", content_encoding="binary",
            headers={"id": "bin-1", "task": "demo.blob"},
        )  # fmt: skip
    finally:
        conn.release()
    original, row = take_one(default)
    assert original["body"] == body

    replay(row.pk, queue=images)

    again, _ = take_one(images)
    assert again["body"] == body
    assert again["headers"]["id"] == "bin-1"
    assert again["content_type"] == "application/octet-stream"
