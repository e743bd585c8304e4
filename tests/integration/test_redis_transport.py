"""Our redis:// kombu transport against a real Redis (DESIGN D3, D4).

Plain kombu on ``broker_connection(url)``: what a worker or a Celery client sees.
Every test uses its own Redis database (``REDIS_TRANSPORT_DB``, default 6),
flushed before and after.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import redis
from django.conf import settings as django_settings
from django.test import override_settings
from kombu import Connection, Consumer, Exchange, Producer, Queue
from kombu.asynchronous import Hub
from kombu.pidbox import Mailbox

from django_tasks_q.messaging.connection import broker_connection
from django_tasks_q.messaging.redis import SecureTransport, SentinelTransport, Transport
from django_tasks_q.messaging.redis.heartbeat import Lease, extend, heartbeats
from django_tasks_q.messaging.redis.inflight import InFlight

pytestmark = pytest.mark.redis

DB = int(os.environ.get("REDIS_TRANSPORT_DB", "6"))
ROOT = Path(__file__).resolve().parents[2]
#: short liveness settings so dead consumers are noticed within about a second
FAST = {"heartbeat_interval": 0.2, "heartbeat_timeout": 1.0}


@pytest.fixture
def url(redis_url: str):
    parts = urlsplit(redis_url)
    dedicated = f"{parts.scheme}://{parts.netloc}/{DB}"
    client = redis.Redis.from_url(dedicated)
    client.flushdb()
    yield dedicated
    client.flushdb()
    client.close()


@pytest.fixture
def raw(url: str):
    client = redis.Redis.from_url(url)
    yield client
    client.close()


@pytest.fixture
def connections(url: str):
    """connect(**transport_options): a connection closed at the end of the test."""
    opened: list[Connection] = []

    def connect(**transport_options) -> Connection:
        conn = broker_connection(url, transport_options=transport_options)
        opened.append(conn)
        return conn

    yield connect
    for conn in opened:
        conn.close()


def make_queue(name: str) -> Queue:
    return Queue(name, Exchange(name, type="direct"), routing_key=name)


def publish(conn: Connection, queue: Queue, body, **kwargs) -> None:
    Producer(conn.default_channel, serializer="json").publish(
        body, exchange=queue.exchange, routing_key=queue.routing_key, declare=[queue], **kwargs
    )


class Collector:
    """Consumes ``queues`` on ``conn``, recording (body, message) pairs."""

    def __init__(self, conn: Connection, queues: list[Queue], ack: bool = True, **kwargs) -> None:
        self.conn = conn
        self.ack = ack
        self.received: list = []
        self.times: list[float] = []
        self.consumer = Consumer(
            conn, queues, callbacks=[self.on_message], accept=["json"], **kwargs
        )
        self.consumer.consume()

    def on_message(self, body, message) -> None:
        self.times.append(time.time())
        self.received.append((body, message))
        if self.ack:
            message.ack()

    @property
    def bodies(self) -> list:
        return [body for body, _ in self.received]

    def drain_until(self, predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
        """Drain events until ``predicate()`` holds or ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        while not predicate():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            try:
                self.conn.drain_events(timeout=min(remaining, 0.5))
            except TimeoutError:
                pass
        return True

    def drain_for(self, seconds: float) -> None:
        """Keep consuming for ``seconds`` (to observe that nothing more arrives)."""
        self.drain_until(lambda: False, timeout=seconds)


def inflight(raw: redis.Redis) -> int:
    return sum(raw.hlen(key) for key in raw.scan_iter("tasks_q:inflight:*"))


def ready(raw: redis.Redis, queue: str) -> int:
    return sum(raw.llen(key) for key in raw.scan_iter(f"{queue}*"))


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


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


# -- delayed store (D4) ----------------------------------------------------------


def eta_headers(task_id: str, seconds: float) -> tuple[dict, float]:
    eta = datetime.now(UTC) + timedelta(seconds=seconds)
    return {"id": task_id, "task": "demo.add", "eta": eta.isoformat()}, eta.timestamp()


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
