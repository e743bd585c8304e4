"""What ``django://`` promises beyond the broker contract (DESIGN D3, docs/brokers.md): transactions, reservation, ack and requeue, options.

Runs on SQLite by default and on PostgreSQL with ``TQ_DATABASE=postgres``.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

import pytest
from django.db import transaction
from django.utils import timezone
from kombu import Consumer, Producer

from django_tasks_q.messaging.connection import broker_connection

from .helpers import (
    get,
    heartbeat_settings,
    publish,
    rows,
)

pytestmark = pytest.mark.django_db(transaction=True)


# -- transactions ---------------------------------------------------------------------
class Rollback(Exception):
    pass


def test_publish_in_a_rolled_back_transaction_leaves_no_message(connect, queue):
    conn = connect()
    queue(conn.default_channel).declare()
    with pytest.raises(Rollback):
        with transaction.atomic():
            publish(conn, queue, {"n": 1})
            assert len(rows(queue)) == 1  # visible to the caller's own transaction
            raise Rollback
    assert rows(queue) == []
    assert queue(conn.default_channel).get() is None


def test_publish_in_a_committed_transaction_is_delivered(connect, queue):
    conn = connect()
    with transaction.atomic():
        publish(conn, queue, {"n": 1})
    message = get(connect(), queue)  # another connection: the row is committed
    assert message.payload == {"n": 1}
    message.ack()


# -- reservation, ack, requeue ----------------------------------------------------------
def test_a_claimed_row_records_its_owner_and_ack_deletes_it(connect, queue):
    conn = connect()
    publish(conn, queue, {"n": 1}, headers={"id": "task-1", "task": "demo"})
    message = get(conn, queue)
    [row] = rows(queue)
    assert row.owner == conn.transport.owner
    assert row.owner.split(":")[1] == str(os.getpid())
    assert row.reserved_at is not None
    assert row.delivery_count == 1
    assert row.task_id == "task-1"
    assert message.headers["x-delivery-count"] == 1
    assert message.delivery_info["redelivered"] is False
    message.ack()
    assert rows(queue) == []


def test_requeue_releases_the_row_and_counts_the_redelivery(connect, queue):
    conn = connect()
    publish(conn, queue, {"n": 1})
    get(conn, queue).requeue()
    [row] = rows(queue)
    assert (row.owner, row.reserved_at, row.delivery_count) == (None, None, 1)
    again = get(connect(), queue)
    assert again.headers["x-delivery-count"] == 2
    assert again.delivery_info["redelivered"] is True
    again.ack()


def test_reject_without_requeue_deletes_the_row(connect, queue):
    conn = connect()
    publish(conn, queue, {"n": 1})
    get(conn, queue).reject(requeue=False)
    assert rows(queue) == []


def test_close_releases_claimed_but_undelivered_rows(connect, queue):
    # Given a consumer that claimed a batch of 5 and was handed only one
    conn = connect(claim_batch=5)
    for n in range(5):
        publish(conn, queue, {"n": n})
    received: list[Any] = []
    with Consumer(conn, [queue], callbacks=[lambda b, m: received.append(m)]):
        conn.drain_events(timeout=5)
        assert len(received) == 1
        assert sum(1 for r in rows(queue) if r.owner) == 5
        received[0].ack()
        # When it closes
        conn.close()
    # Then the other four are ready again, never counted as delivered
    assert [(r.owner, r.delivery_count) for r in rows(queue)] == [(None, 0)] * 4


def test_batched_acks_are_written_at_the_next_claim_and_on_close(connect, queue):
    # Given a consumer deferring acks, claiming 3 rows at a time
    conn = connect(ack_batch=50, claim_batch=3)
    for n in range(5):
        publish(conn, queue, {"n": n})
    received: list[Any] = []

    def on_message(body: Any, message: Any) -> None:
        received.append(body["n"])
        message.ack()

    with Consumer(conn, [queue], callbacks=[on_message]):
        while len(received) < 3:
            conn.drain_events(timeout=5)
        # acked, not yet deleted
        assert len(rows(queue)) == 5
        while len(received) < 5:
            conn.drain_events(timeout=5)
        # the second claim wrote the first three acks
        assert len(rows(queue)) == 2
    conn.close()
    # and closing wrote the rest
    assert rows(queue) == []
    assert received == [0, 1, 2, 3, 4]


def test_a_named_exchange_routes_through_bindings_declared_by_another_process(connect, queue):
    consumer = connect()
    queue(consumer.default_channel).declare()
    # this connection never declared the queue, only the exchange
    Producer(connect().default_channel).publish(
        {"n": 1}, exchange=queue.exchange, routing_key=queue.routing_key, declare=[queue.exchange]
    )
    message = get(consumer, queue)
    assert message.payload == {"n": 1}
    message.ack()


def test_binary_bodies_round_trip(connect, queue):
    conn = connect()
    data = bytes(range(256))
    publish(conn, queue, data, content_type="application/octet-stream", content_encoding="binary")
    message = get(conn, queue)
    assert message.body == data
    message.ack()


def test_a_far_eta_holds_the_message_back_and_a_near_one_does_not(connect, queue):
    conn = connect()
    far = (timezone.now() + timedelta(hours=1)).isoformat()
    near = (timezone.now() + timedelta(seconds=5)).isoformat()
    publish(conn, queue, {"n": "far"}, headers={"task": "demo", "id": "far", "eta": far})
    publish(conn, queue, {"n": "near"}, headers={"task": "demo", "id": "near", "eta": near})
    by_id = {r.task_id: r for r in rows(queue)}
    assert by_id["far"].visible_at > timezone.now() + timedelta(minutes=59)
    assert by_id["near"].visible_at <= timezone.now()
    bound = queue(conn.default_channel)
    assert bound.queue_declare().message_count == 1  # only the near one is ready
    message = get(conn, queue)
    assert message.headers["id"] == "near"
    message.ack()
    assert bound.get() is None
    assert bound.purge() == 1  # purge takes delayed messages too


def test_the_generic_claim_used_on_mariadb_orders_and_reserves(connect, queue):
    # MariaDB/MySQL take this path (SELECT ... FOR UPDATE SKIP LOCKED, then UPDATE);
    # here it runs on the test database to check its ordering and bookkeeping.
    from django_tasks_q.messaging.database_sql import _claim_generic

    conn = connect()
    for n, priority in enumerate([0, 9, 5]):
        publish(conn, queue, {"n": n}, priority=priority)
    claimed = _claim_generic("default", queue.name, "generic-owner", 2)
    assert [(row[1]["body"], row[2]) for row in claimed] == [('{"n": 1}', 1), ('{"n": 2}', 1)]
    assert sorted(r.owner or "" for r in rows(queue)) == ["", "generic-owner", "generic-owner"]


def test_bad_transport_options_name_the_option():
    with pytest.raises(ValueError, match="'claim_batch' must be a positive number"):
        _ = broker_connection("django://", transport_options={"claim_batch": 0}).transport
    with pytest.raises(ValueError, match="'nope', which is not in DATABASES"):
        _ = broker_connection("django://", transport_options={"database_alias": "nope"}).transport


def test_heartbeat_timeout_must_leave_room_for_late_beats():
    from django.core.exceptions import ImproperlyConfigured

    with heartbeat_settings(interval=10, timeout=15):
        with pytest.raises(ImproperlyConfigured, match="HEARTBEAT_TIMEOUT"):
            _ = broker_connection("django://").transport
