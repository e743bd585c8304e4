"""Our redis:// kombu transport against a real Redis: consumers waiting for messages.

A consumer with nothing to claim registers on its queues' waiting lists and blocks
on its own inbox; a publish hands the message straight to one of them (one hop, one
consumer woken). What a user sees: the message arrives, once, to one consumer; the
others stay asleep; nothing is lost when a waiting consumer dies or closes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest

from .helpers import FAST, ROOT, Collector, inflight, make_queue, publish, ready, wait_for

pytestmark = pytest.mark.redis


def waiting(raw, queue: str) -> list[str]:
    return [owner.decode() for owner in raw.lrange(f"tasks_q:waiting:{queue}", 0, -1)]


def block_in_thread(conn, seconds: float = 5.0) -> threading.Thread:
    def block() -> None:
        try:
            conn.drain_events(timeout=seconds)
        except TimeoutError:
            pass

    thread = threading.Thread(target=block, daemon=True)
    thread.start()
    return thread


def test_a_publish_is_handed_to_the_waiting_consumer_without_touching_the_queue(
    connections, raw
):
    q = make_queue("handed")
    conn = connections()
    collector = Collector(conn, [q])
    publish(connections(), q, "warm-up")
    assert collector.drain_until(lambda: len(collector.received) == 1)

    thread = block_in_thread(conn)
    owner = conn.default_channel.inflight.owner
    assert wait_for(lambda: waiting(raw, "handed") == [owner], timeout=5)
    publish(connections(), q, "straight in")
    thread.join(timeout=6)

    assert collector.bodies == ["warm-up", "straight in"]
    assert ready(raw, "handed") == 0
    assert waiting(raw, "handed") == []  # handed: it left the waiting list
    assert collector.drain_until(lambda: inflight(raw) == 0, timeout=3)  # and the ack landed
    assert raw.exists(f"tasks_q:inbox:{owner}") == 0


def test_one_publish_wakes_one_of_two_waiting_consumers(connections, raw):
    q = make_queue("one-of-two")
    first, second = connections(), connections()
    collectors = [Collector(first, [q]), Collector(second, [q])]
    publish(connections(), q, "declare")
    assert wait_for(
        lambda: any(c.drain_until(lambda: False, 0.05) or c.received for c in collectors),
        timeout=5,
    )
    threads = [block_in_thread(first, 3), block_in_thread(second, 3)]
    owners = {first.default_channel.inflight.owner, second.default_channel.inflight.owner}
    assert wait_for(lambda: set(waiting(raw, "one-of-two")) == owners, timeout=5)

    publish(connections(), q, "only one")

    # the one that got it leaves the waiting list; the other still waits, undisturbed
    assert wait_for(lambda: len(waiting(raw, "one-of-two")) == 1, timeout=5)
    got = [c for c in collectors if "only one" in c.bodies]
    assert len(got) == 1
    assert waiting(raw, "one-of-two") == [
        next(iter(owners - {got[0].conn.default_channel.inflight.owner}))
    ]
    for thread in threads:
        thread.join(timeout=5)
    assert sum(c.bodies.count("only one") for c in collectors) == 1


def test_a_waiting_owner_without_a_heartbeat_is_skipped(connections, raw):
    q = make_queue("ghost")
    publisher = connections()
    publish(publisher, q, "declare")
    raw.delete("ghost")
    raw.rpush("tasks_q:waiting:ghost", "ghost-owner-with-no-heartbeat")

    publish(publisher, q, "kept")

    assert ready(raw, "ghost") == 1  # queued, not handed to the dead owner
    assert waiting(raw, "ghost") == []
    assert raw.exists("tasks_q:inflight:ghost-owner-with-no-heartbeat") == 0
    collector = Collector(connections(), [q])
    assert collector.drain_until(lambda: collector.bodies == ["kept"])


def test_closing_a_waiting_consumer_takes_it_off_the_waiting_lists(connections, raw):
    q = make_queue("leaving")
    conn = connections()
    collector = Collector(conn, [q])
    publish(connections(), q, "declare")
    assert collector.drain_until(lambda: len(collector.received) == 1)
    thread = block_in_thread(conn, 1)
    owner = conn.default_channel.inflight.owner
    assert wait_for(lambda: waiting(raw, "leaving") == [owner], timeout=5)
    thread.join(timeout=5)

    conn.close()

    assert waiting(raw, "leaving") == []
    assert raw.exists(f"tasks_q:idlereg:{owner}") == 0
    publish(connections(), q, "after")
    assert ready(raw, "leaving") == 1  # queued for the next consumer, not handed to the gone one


WAIT_THEN_DIE = """
import os, sys, threading, time
import redis
from kombu import Connection, Consumer, Exchange, Queue
from django_tasks_q.messaging.redis import Transport

url, name = sys.argv[1], sys.argv[2]
queue = Queue(name, Exchange(name), routing_key=name)
conn = Connection(url, transport=Transport,
                  transport_options={"heartbeat_interval": 0.2, "heartbeat_timeout": 1.0})
Consumer(conn, [queue], callbacks=[lambda body, message: None], accept=["json"]).consume()
try:
    conn.drain_events(timeout=0.3)  # claims nothing: now waiting on its inbox
except Exception:
    pass
raw = redis.Redis.from_url(url)
owner = conn.default_channel.inflight.owner
print(owner, flush=True)
# wait until the test has handed us a message (its BLPOP may have it already), then die
while not raw.hlen("tasks_q:inflight:" + owner):
    time.sleep(0.01)
os._exit(0)
"""


def test_a_message_handed_to_a_consumer_that_dies_is_redelivered(url, connections, raw):
    q = make_queue("handed-then-dead")
    conn = connections(**FAST)
    publish(conn, q, "declare")
    raw.delete("handed-then-dead")
    proc = subprocess.Popen(
        [sys.executable, "-c", WAIT_THEN_DIE, url, "handed-then-dead"],
        env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    owner = proc.stdout.readline().strip()
    assert wait_for(lambda: waiting(raw, "handed-then-dead") == [owner], timeout=10)

    publish(conn, q, "not lost")  # handed to the waiting process, which then dies
    assert proc.wait(timeout=10) == 0
    assert inflight(raw) == 1 and ready(raw, "handed-then-dead") == 0

    started = time.monotonic()
    collector = Collector(conn, [q])
    assert collector.drain_until(lambda: collector.bodies == ["not lost"], timeout=15)
    assert time.monotonic() - started < 10
    message = collector.received[0][1]
    assert message.headers["x-delivery-count"] == 2  # it counts as delivered once
    assert collector.drain_until(lambda: inflight(raw) == 0, timeout=3)
    assert raw.exists(f"tasks_q:inbox:{owner}") == 0
