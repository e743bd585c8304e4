"""What ``django://`` promises beyond the broker contract (DESIGN D3, docs/brokers.md): dead owners and heartbeats.

Runs on SQLite by default and on PostgreSQL with ``TQ_DATABASE=postgres``.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from kombu import Consumer

from django_tasks_q.messaging.database import release_dead_owners
from tests.integration.test_broker_contract import wait_for

from .helpers import (
    beat_as,
    drain_once,
    get,
    heartbeat_settings,
    models,
    publish,
    reserve_as,
    rows,
)

pytestmark = pytest.mark.django_db(transaction=True)


def test_rows_of_an_owner_with_a_stale_heartbeat_are_redelivered(connect, queue):
    conn = connect()
    publish(conn, queue, {"n": 1})
    reserve_as(queue, "dead-host:1:aaaa", reserved_ago=5)
    beat_as("dead-host:1:aaaa", seen_ago=600)
    assert release_dead_owners() == 1
    message = get(conn, queue)
    assert message.headers["x-delivery-count"] == 2
    assert message.delivery_info["redelivered"] is True
    message.ack()


def test_rows_of_a_live_owner_stay_reserved_however_old(connect, queue):
    conn = connect()
    publish(conn, queue, {"n": 1})
    reserve_as(queue, "busy-host:1:bbbb", reserved_ago=86400)  # a day-long task
    beat_as("busy-host:1:bbbb", seen_ago=1)
    assert release_dead_owners() == 0
    assert queue(conn.default_channel).get() is None
    assert rows(queue)[0].owner == "busy-host:1:bbbb"


def test_rows_of_an_owner_that_never_beat_are_released_after_the_timeout(connect, queue):
    conn = connect()
    publish(conn, queue, {"n": 1})
    reserve_as(queue, "ghost:1:cccc", reserved_ago=5)
    assert release_dead_owners() == 0  # reserved too recently to judge
    reserve_as(queue, "ghost:1:cccc", reserved_ago=600)
    assert release_dead_owners() == 1


def test_consumers_release_dead_owners_rows_on_their_own(connect, queue):
    conn = connect(release_interval=0.1)
    publish(conn, queue, {"n": 1})
    reserve_as(queue, "ghost:2:dddd", reserved_ago=600)
    received: list[Any] = []
    with Consumer(conn, [queue], callbacks=[lambda b, m: received.append(m)]):
        wait_for(lambda: received or drain_once(conn), what="the released message")
    assert received[0].headers["x-delivery-count"] == 2
    received[0].ack()


def test_a_long_task_is_redelivered_only_once_its_worker_stops_beating(connect, queue):
    with heartbeat_settings(interval=0.1, timeout=0.5):
        # Given a worker busy with a long task: it claimed, and never calls drain_events again
        worker = connect()
        publish(worker, queue, {"n": 1})
        get(worker, queue)
        _, WorkerHeartbeat = models()
        owner = worker.transport.owner
        first_beat = WorkerHeartbeat.objects.get(owner=owner).last_seen
        # Then for three heartbeat timeouts its backup thread keeps the row alive
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            assert release_dead_owners() == 0
            time.sleep(0.05)
        assert WorkerHeartbeat.objects.get(owner=owner).last_seen > first_beat
        # When the worker dies (its heartbeat stops, its row stays)
        worker.transport.heartbeat.stop(delete_row=False)
        # Then its message is released and delivered again
        wait_for(lambda: release_dead_owners() or None, what="the dead worker's row")
        message = get(connect(), queue)
        assert message.headers["x-delivery-count"] == 2
        message.ack()


def test_closing_stops_the_heartbeat_thread_and_removes_its_row(connect, queue):
    conn = connect()
    publish(conn, queue, {"n": 1})
    get(conn, queue).ack()
    _, WorkerHeartbeat = models()
    owner = conn.transport.owner
    assert WorkerHeartbeat.objects.filter(owner=owner).exists()
    conn.close()
    assert not WorkerHeartbeat.objects.filter(owner=owner).exists()
    assert not [t for t in threading.enumerate() if t.name == f"tasks_q-heartbeat-{owner}"]
