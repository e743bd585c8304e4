"""Our redis:// kombu transport against a real Redis (DESIGN D3, D4): the delayed store, fanout and wake-ups.

Plain kombu on ``broker_connection(url)``: what a worker or a Celery client sees.
Every test uses its own Redis database (``REDIS_TRANSPORT_DB``, default 6),
flushed before and after (``conftest.py``).
"""

from __future__ import annotations

import threading
import time

import pytest
from django.conf import settings as django_settings
from django.test import override_settings
from kombu import Connection
from kombu.pidbox import Mailbox

from .helpers import Collector, eta_headers, inflight, make_queue, publish, ready, wait_for

pytestmark = pytest.mark.redis


# -- delayed store (D4) ----------------------------------------------------------


def test_far_eta_waits_in_the_delayed_store_and_is_delivered_once(connections):
    with override_settings(TASKS_Q={**django_settings.TASKS_Q, "ETA_HORIZON": 1.0}):
        conn = connections()
        q = make_queue("later")
        headers, due = eta_headers("task-1", 2.0)
        publish(conn, q, "once", headers=headers)
        publish(conn, q, "once", headers=headers)  # same task id and ETA: stored once
        channel = conn.default_channel
        assert channel.schedule_count() == 1
        [listed] = channel.list_scheduled()
        assert (listed.task_id, listed.queue, listed.task) == ("task-1", "later", "demo.add")
        assert abs(listed.eta.timestamp() - due) < 0.001

        collector = Collector(conn, [q])
        assert collector.drain_until(lambda: len(collector.received) == 1, timeout=5)
        assert collector.times[0] >= due - 0.002  # not early
        assert collector.times[0] < due + 1.0  # and promptly after
        collector.drain_for(1.0)
        assert collector.bodies == ["once"]
        assert channel.schedule_count() == 0


def test_near_eta_goes_straight_to_the_queue(connections, raw):
    with override_settings(TASKS_Q={**django_settings.TASKS_Q, "ETA_HORIZON": 60.0}):
        conn = connections()
        q = make_queue("soon")
        headers, _ = eta_headers("task-2", 5.0)
        publish(conn, q, "soon", headers=headers)
        assert conn.default_channel.schedule_count() == 0
        assert ready(raw, "soon") == 1


def test_a_delayed_message_can_be_revoked(connections):
    conn = connections(eta_horizon=1.0)
    q = make_queue("revoke")
    headers, _ = eta_headers("task-3", 1.5)
    publish(conn, q, "never", headers=headers)
    channel = conn.default_channel
    assert channel.remove_scheduled("task-3") == 1
    assert channel.remove_scheduled("task-3") == 0
    assert channel.schedule_count() == 0
    collector = Collector(conn, [q])
    collector.drain_for(2.5)
    assert collector.received == []


def test_far_eta_from_a_celery_client_is_moved_to_the_delayed_store(url, connections, raw):
    # A stock kombu (Celery) client pushes straight onto the queue list.
    q = make_queue("foreign")
    ours = connections(eta_horizon=10.0)
    collector = Collector(ours, [q])
    with Connection(url) as celery_client:
        headers, due = eta_headers("task-4", 60.0)
        publish(celery_client, q, "later", headers=headers)
    collector.drain_for(1.0)
    assert collector.received == []
    [listed] = ours.default_channel.list_scheduled()
    assert listed.task_id == "task-4"
    assert inflight(raw) == 0 and ready(raw, "foreign") == 0


# -- fanout and wake-up ------------------------------------------------------------


def test_pidbox_broadcast_round_trip(connections, raw):
    mailbox = Mailbox("tqtest", type="fanout", accept=["json"])
    server_conn, client_conn = connections(), connections()
    node = mailbox(server_conn).Node("node-1", handlers={"ping": lambda state: "pong"})
    node.channel = server_conn.default_channel
    node.listen()
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                server_conn.drain_events(timeout=0.1)
            except TimeoutError:
                pass

    server = threading.Thread(target=serve)
    server.start()
    try:
        assert wait_for(lambda: raw.execute_command("PUBSUB", "NUMPAT") >= 1, timeout=5)
        replies = mailbox(client_conn).multi_call("ping", timeout=3, limit=1)
    finally:
        stop.set()
        server.join(timeout=5)
    assert replies == [{"node-1": "pong"}]


def test_a_blocked_consumer_wakes_within_milliseconds(connections):
    q = make_queue("wake")
    conn = connections()
    collector = Collector(conn, [q])
    publish(connections(), q, "warm-up")  # declares the queue
    assert collector.drain_until(lambda: len(collector.received) == 1)
    waited: list[float] = []

    def block() -> None:
        start = time.monotonic()
        conn.drain_events(timeout=5)
        waited.append(time.monotonic() - start)

    thread = threading.Thread(target=block)
    thread.start()
    channel = conn.default_channel
    assert wait_for(lambda: bool(channel._in_poll), timeout=5)  # blocked in Redis
    sent_at = time.time()
    publish(connections(), q, "now")
    thread.join(timeout=6)

    assert collector.bodies[-1] == "now"
    latency = collector.times[-1] - sent_at
    assert latency < 0.5, f"woke after {latency * 1000:.0f} ms"
    assert waited and waited[0] < 5
