"""Our redis:// kombu transport against a real Redis (DESIGN D3, D4): wiring and basic delivery.

Plain kombu on ``broker_connection(url)``: what a worker or a Celery client sees.
Every test uses its own Redis database (``REDIS_TRANSPORT_DB``, default 6),
flushed before and after (``conftest.py``).
"""

from __future__ import annotations

import pytest
from kombu import Producer

from django_tasks_q.messaging.connection import broker_connection
from django_tasks_q.messaging.redis import SecureTransport, SentinelTransport, Transport

from .helpers import Collector, eta_headers, inflight, make_queue, publish, ready

pytestmark = pytest.mark.redis


# -- wiring ----------------------------------------------------------------------


def test_broker_connection_uses_our_transports(url):
    assert isinstance(broker_connection(url).transport, Transport)
    secure = broker_connection(url.replace("redis://", "rediss://", 1))
    assert isinstance(secure.transport, SecureTransport)
    assert secure.ssl  # certificates checked by default
    sentinel = broker_connection("sentinel://127.0.0.1:26379/0")
    assert sentinel.transport_cls is SentinelTransport


def test_global_keyprefix_is_refused_with_a_clear_error(connections):
    conn = connections(global_keyprefix="app1:")
    with pytest.raises(ValueError, match="global_keyprefix.*database number"):
        conn.default_channel  # noqa: B018


def test_bad_heartbeat_settings_are_refused(connections):
    conn = connections(heartbeat_interval=5, heartbeat_timeout=2)
    with pytest.raises(ValueError, match="heartbeat timeout .* longer than the heartbeat interval"):
        conn.default_channel  # noqa: B018


# -- basic delivery --------------------------------------------------------------


def test_round_trip_and_ack_clears_inflight(connections, raw):
    conn = connections()
    q = make_queue("rt")
    publish(conn, q, {"n": 1})
    collector = Collector(conn, [q])

    assert collector.drain_until(lambda: len(collector.received) == 1)
    body, message = collector.received[0]
    assert body == {"n": 1}
    assert message.headers["x-delivery-count"] == 1
    assert message.delivery_info["redelivered"] is False
    assert message.delivery_info["routing_key"] == "rt"
    # the ack may wait in a batch, but is flushed before the consumer blocks
    assert collector.drain_until(lambda: inflight(raw) == 0, timeout=3)
    assert ready(raw, "rt") == 0


def test_reject_with_requeue_puts_it_back_at_the_head(connections, raw):
    conn = connections()
    q = make_queue("requeue")
    for n in range(2):
        publish(conn, q, {"n": n})
    rejected = []

    def on_message(body, message):
        if not rejected:
            rejected.append(body)
            message.requeue()
        else:
            collector.received.append((body, message))
            message.ack()

    collector = Collector(conn, [q], ack=False, prefetch_count=1)  # claims one at a time
    collector.consumer.callbacks = [on_message]
    assert collector.drain_until(lambda: len(collector.received) == 2)

    assert rejected == [{"n": 0}]
    (first, again), (second, fresh) = collector.received
    assert first == {"n": 0}  # the requeued message comes first: it went back to the head
    assert again.delivery_info["redelivered"] is True
    assert again.headers["x-delivery-count"] == 2
    assert second == {"n": 1}
    assert fresh.headers["x-delivery-count"] == 1
    assert collector.drain_until(lambda: inflight(raw) == 0, timeout=3)


def test_reject_without_requeue_drops_it(connections, raw):
    conn = connections()
    q = make_queue("drop")
    publish(conn, q, {"n": 0})
    collector = Collector(conn, [q], ack=False)
    assert collector.drain_until(lambda: len(collector.received) == 1)
    collector.received[0][1].reject()

    collector.drain_for(1.0)
    assert len(collector.received) == 1
    assert inflight(raw) == 0
    assert ready(raw, "drop") == 0


def test_priorities_higher_first_fifo_within_a_priority(connections):
    conn = connections()
    q = make_queue("prio")
    sent = [(0, "a"), (5, "b"), (9, "c"), (3, "d"), (9, "e"), (1, "f"), (0, "g")]
    for priority, name in sent:
        publish(conn, q, name, priority=priority)
    collector = Collector(conn, [q])
    assert collector.drain_until(lambda: len(collector.received) == len(sent))
    assert collector.bodies == ["c", "e", "b", "d", "f", "a", "g"]


def test_one_consumer_on_several_queues(connections):
    conn = connections()
    queues = [make_queue("multi-a"), make_queue("multi-b")]
    for n in range(3):
        for q in queues:
            publish(conn, q, f"{q.name}-{n}")
    collector = Collector(conn, queues)
    assert collector.drain_until(lambda: len(collector.received) == 6)
    assert sorted(collector.bodies) == sorted(f"{q.name}-{n}" for q in queues for n in range(3))


def test_basic_get_claims_one_message(connections, raw):
    conn = connections()
    q = make_queue("get")
    publish(conn, q, "first")
    publish(conn, q, "second")
    channel = conn.default_channel

    message = channel.basic_get("get")
    assert message.decode() == "first"
    assert message.headers["x-delivery-count"] == 1
    message.ack()
    assert channel.basic_get("get", no_ack=True).decode() == "second"
    assert channel.basic_get("get") is None
    conn.close()
    assert inflight(raw) == 0


def test_publish_batch_delivers_every_message(connections):
    conn = connections()
    q = make_queue("batch")
    producer = Producer(conn.default_channel, serializer="json")
    producer.declare()
    q(conn.default_channel).declare()
    headers, _ = eta_headers("batched-later", 3600)
    with producer.batch(max_size=7):
        for n in range(25):
            producer.publish(n, exchange=q.exchange, routing_key="batch")
        producer.publish("later", exchange=q.exchange, routing_key="batch", headers=headers)
    collector = Collector(conn, [q])
    assert collector.drain_until(lambda: len(collector.received) == 25)
    assert collector.bodies == list(range(25))
    assert [m.task_id for m in conn.default_channel.list_scheduled()] == ["batched-later"]


def test_undecodable_payload_is_set_aside_and_consuming_goes_on(connections, raw):
    conn = connections()
    q = make_queue("junk")
    q(conn.default_channel).declare()
    raw.lpush("junk", b"this is not json")
    publish(conn, q, "good")
    collector = Collector(conn, [q])
    assert collector.drain_until(lambda: len(collector.received) == 1)
    assert collector.bodies == ["good"]
    assert raw.lrange("tasks_q:undecodable:junk", 0, -1) == [b"this is not json"]
    assert collector.drain_until(lambda: inflight(raw) == 0, timeout=3)
