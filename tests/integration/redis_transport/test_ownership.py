"""Our redis:// kombu transport against a real Redis (DESIGN D3, D4): at least once, exactly one owner.

Plain kombu on ``broker_connection(url)``: what a worker or a Celery client sees.
Every test uses its own Redis database (``REDIS_TRANSPORT_DB``, default 6),
flushed before and after (``conftest.py``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest
import redis
from kombu import Consumer, Producer
from kombu.asynchronous import Hub

from django_tasks_q.messaging.redis.heartbeat import Lease, extend, heartbeats
from django_tasks_q.messaging.redis.inflight import InFlight

from .helpers import FAST, ROOT, Collector, inflight, make_queue, publish, ready, wait_for

pytestmark = pytest.mark.redis


# -- at least once, exactly one owner -------------------------------------------


def test_two_consumers_receive_each_message_exactly_once(connections, raw):
    total = 2000
    q = make_queue("race")
    received: list[int] = []
    lock = threading.Lock()
    stop = threading.Event()
    ready_consumers = threading.Barrier(3, timeout=10)
    errors: list[BaseException] = []

    def consume() -> None:
        try:
            conn = connections()

            def on_message(body, message):
                with lock:
                    received.append(body)
                message.ack()

            with Consumer(conn, [q], callbacks=[on_message], accept=["json"]):
                ready_consumers.wait()
                while not stop.is_set():
                    try:
                        conn.drain_events(timeout=0.2)
                    except TimeoutError:
                        pass
            conn.close()
        except BaseException as exc:  # surfaced by the assertions below
            errors.append(exc)

    threads = [threading.Thread(target=consume) for _ in range(2)]
    for thread in threads:
        thread.start()
    ready_consumers.wait()
    publisher = connections()
    producer = Producer(publisher.default_channel, serializer="json")
    with producer.batch(max_size=200):
        for n in range(total):
            producer.publish(n, exchange=q.exchange, routing_key="race")

    assert wait_for(lambda: len(received) >= total or bool(errors), timeout=60)
    stop.set()
    for thread in threads:
        thread.join(timeout=10)
    assert not errors, errors
    assert len(received) == total
    assert sorted(received) == list(range(total))
    assert inflight(raw) == 0
    assert ready(raw, "race") == 0


CRASHING_CONSUMER = """
import os, sys
from kombu import Connection, Consumer, Exchange, Queue
from django_tasks_q.messaging.redis import Transport

url, name, expected = sys.argv[1], sys.argv[2], int(sys.argv[3])
queue = Queue(name, Exchange(name), routing_key=name)
conn = Connection(url, transport=Transport,
                  transport_options={"heartbeat_interval": 0.2, "heartbeat_timeout": 1.0})
got = []
Consumer(conn, [queue], callbacks=[lambda body, message: got.append(body)],
         accept=["json"]).consume()
while len(got) < expected:
    conn.drain_events(timeout=10)
print(len(got), flush=True)
os._exit(0)  # die holding every message: no ack, no close, the heartbeat stops
"""


def test_messages_of_a_dead_consumer_are_redelivered_after_its_heartbeat_expires(
    url, connections, raw
):
    # Given three messages claimed by a consumer process that then dies without acking
    conn = connections(**FAST)
    q = make_queue("crash")
    for n in range(3):
        publish(conn, q, n)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    crashed = subprocess.run(
        [sys.executable, "-c", CRASHING_CONSUMER, url, "crash", "3"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert crashed.stdout.strip() == "3", crashed.stderr
    assert inflight(raw) == 3 and ready(raw, "crash") == 0

    # When another consumer runs past the dead one's heartbeat timeout
    collector = Collector(conn, [q])
    assert collector.drain_until(lambda: len(collector.received) == 3, timeout=15)

    # Then it gets all three, flagged as redelivered, second delivery each
    assert collector.bodies == [0, 1, 2]
    for _, message in collector.received:
        assert message.delivery_info["redelivered"] is True
        assert message.headers["x-delivery-count"] == 2
    assert collector.drain_until(lambda: inflight(raw) == 0, timeout=3)
    assert raw.smembers("tasks_q:owners") <= {
        owner.encode() for owner in [collector.conn.default_channel.inflight.owner]
    }


def test_a_live_consumer_keeps_its_message_past_the_heartbeat_timeout(connections, raw):
    # Given consumer A holding a message without acking (a long task)
    q = make_queue("longtask")
    holder = Collector(connections(**FAST), [q], ack=False)
    publish(holder.conn, q, "long")
    assert holder.drain_until(lambda: len(holder.received) == 1)

    # When consumer B keeps consuming (and sweeping) for three heartbeat timeouts
    other = Collector(connections(**FAST), [q])
    other.drain_for(3 * FAST["heartbeat_timeout"])

    # Then B never sees it, and A's ack still lands
    assert other.received == []
    assert inflight(raw) == 1
    holder.received[0][1].ack()
    assert holder.drain_until(lambda: inflight(raw) == 0, timeout=3)
    other.drain_for(0.5)
    assert other.received == []


def test_a_consumer_lists_its_owners_for_whoever_vouches_for_it(connections, raw):
    # Given a listener on this process's heartbeat registry (the prefork child's slot)
    registry = heartbeats()
    seen: list[list[Lease]] = []
    registry.on_change = seen.append
    try:
        # When a consumer claims (its owner is born) and then closes (it is gone)
        conn = connections(**FAST)
        q = make_queue("vouched")
        publish(conn, q, "m")
        collector = Collector(conn, [q])
        assert collector.drain_until(lambda: len(collector.received) == 1)
        owner = conn.default_channel.inflight.owner
        conn.close()
    finally:
        registry.on_change = None

    # Then the listener heard of the owner with its timeout, then of its leaving
    assert [Lease(owner, 1000)] in seen
    assert owner not in {lease.owner for lease in seen[-1]}


def test_extending_leases_never_revives_an_owner(raw):
    # Given one live owner and one whose heartbeat is gone (released or expired)
    alive, gone = (
        InFlight(heartbeat_ttl=1.0, sep="\x06\x16"),
        InFlight(heartbeat_ttl=1.0, sep="\x06\x16"),
    )
    alive.beat(raw)

    # When a supervisor extends both with a longer lease
    extended = extend(raw, [Lease(alive.owner, 60_000), Lease(gone.owner, 60_000)])

    # Then only the live one is extended; the other stays dead
    assert extended == 1
    assert raw.pttl(alive.heartbeat_key) > 10_000
    assert not raw.exists(gone.heartbeat_key)


def test_no_beat_after_release_so_no_false_alarm(raw, caplog):
    # Given an owner that beat once, then gave its messages back (closing)
    owner = InFlight(heartbeat_ttl=10, sep="\x06\x16")
    owner.beat(raw)
    owner.release(raw)

    # When its heartbeat thread, late, beats once more
    with caplog.at_level("WARNING", logger="django_tasks_q.messaging.redis"):
        owner.beat(raw)

    # Then nothing comes back to life and nobody is told it had expired
    assert not raw.exists(owner.heartbeat_key)
    assert "had expired" not in caplog.text


def test_cancelling_a_consumer_gives_back_what_it_had_not_handed_out(connections, raw):
    conn = connections()
    q = make_queue("cancel")
    for n in range(3):
        publish(conn, q, n)
    collector = Collector(conn, [q], ack=False)
    assert collector.drain_until(lambda: len(collector.received) == 1)  # 1 and 2 buffered
    collector.consumer.cancel()
    assert ready(raw, "cancel") == 2 and inflight(raw) == 1
    collector.received[0][1].ack()
    conn.close()
    assert inflight(raw) == 0 and ready(raw, "cancel") == 2


def test_closing_gives_back_unacked_and_unhanded_messages_in_order(connections, raw):
    q = make_queue("close")
    first = Collector(connections(), [q], ack=False)
    for n in range(3):
        publish(first.conn, q, n)
    assert first.drain_until(lambda: len(first.received) == 1)  # 0 delivered; 1, 2 buffered
    first.conn.close()
    assert inflight(raw) == 0 and ready(raw, "close") == 3

    second = Collector(connections(), [q])
    assert second.drain_until(lambda: len(second.received) == 3)
    assert second.bodies == [0, 1, 2]
    counts = [message.headers["x-delivery-count"] for _, message in second.received]
    assert counts == [2, 1, 1]  # only the delivered one counts a delivery


def test_a_claim_whose_reply_is_lost_gives_its_messages_back(raw):
    class LosesFirstReply:
        """The claim runs on the server, then the connection drops before the reply."""

        def __init__(self, client):
            self.client, self.armed = client, True

        def __getattr__(self, name):
            return getattr(self.client, name)

        def evalsha(self, *args):
            result = self.client.evalsha(*args)
            if self.armed:
                self.armed = False
                raise redis.ConnectionError("reply lost")
            return result

    raw.lpush("lost", b"m1", b"m2")
    owner = InFlight(heartbeat_ttl=10, sep="\x06\x16")
    client = LosesFirstReply(raw)
    with pytest.raises(redis.ConnectionError):
        owner.claim(client, ["lost"], [], limit=10, move_limit=0)
    assert raw.hlen(owner.key) == 2 and raw.llen("lost") == 0  # claimed, unknown to us

    result = owner.claim(client, ["lost"], [], limit=10, move_limit=0)
    assert sorted(item.raw for item in result.messages) == [b"m1", b"m2"]
    owner.release(raw)
    assert raw.llen("lost") == 2 and not raw.exists(owner.key)


def test_consuming_under_kombus_event_loop(connections):
    q = make_queue("hub")
    conn = connections()
    hub = Hub()
    received = []

    def on_message(body, message):
        received.append(body)
        message.ack()

    conn.ensure_connection()
    consumer = Consumer(conn, [q], callbacks=[on_message], accept=["json"], prefetch_count=5)
    conn.register_with_event_loop(hub)
    consumer.consume()
    for n in range(30):
        publish(connections(), q, n)
    loop = hub.create_loop()
    try:
        assert wait_for(lambda: next(loop) or len(received) == 30, timeout=10)
    finally:
        hub.close()
    assert received == list(range(30))
