"""Publishing through our lanes (messaging/lanes.py), read back with plain kombu.

One contract, run on every broker: what ``delay()``/``apply_async()`` and the bulk path
(``publishing_batch``, ``Task.delay_many``) put on the queue is what a consumer gets,
headers, properties and priority included.  Then the Redis writer's own cases: its
payload is the transport's, a forgotten script or a killed connection is recovered,
an ETA goes to the delayed store.
"""

from __future__ import annotations

import os
import threading
import time
import uuid

import pytest
import redis
from django.db import connection as db_connection
from django.db import transaction
from django.test import override_settings
from kombu import Exchange, Producer, Queue

from django_tasks_q import signals, task
from django_tasks_q.bulk import publishing_batch
from django_tasks_q.calling import send_task
from django_tasks_q.message import Message
from django_tasks_q.messaging.connection import broker_connection
from django_tasks_q.messaging.producer import get_publisher
from django_tasks_q.serialization import accepted_types
from tests import services

ACCEPT = accepted_types(["json"])


@task(name="publishing.add")
def add(x, y):
    return x + y


def _queue() -> str:
    return f"tq-publish-{uuid.uuid4().hex[:10]}"


@pytest.fixture(
    params=[
        "memory",
        pytest.param("django", marks=pytest.mark.django_db(transaction=True)),
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("amqp", marks=pytest.mark.amqp),
    ]
)
def broker(request):
    """``(url, queue)`` with TASKS_Q pointing at that broker and queue."""
    kind = request.param
    if kind == "memory":
        url = "memory://"
    elif kind == "django":
        if db_connection.vendor == "postgresql":
            services.require("postgres")
        url = "django://"
    elif kind == "redis":
        url = request.getfixturevalue("redis_url")
    else:
        url = request.getfixturevalue("amqp_url")
    queue = _queue()
    with override_settings(TASKS_Q={"BROKER_URL": url, "DEFAULT_QUEUE": queue, "QUEUES": [queue]}):
        yield url, queue
        _delete_queue(url, queue)


def _delete_queue(url: str, queue: str) -> None:
    conn = broker_connection(url)
    try:
        conn.default_channel.queue_delete(queue)
    except Exception:  # already gone
        pass
    finally:
        conn.release()
    if url.startswith("redis"):
        client = redis.Redis.from_url(url)
        for key in client.scan_iter(match=f"*{queue}*"):
            client.delete(key)
        client.close()


def drain(url: str, queue: str, n: int, timeout: float = 15.0) -> list:
    """The first ``n`` messages of ``queue`` (kombu Messages), waiting up to ``timeout``."""
    got = []
    deadline = time.monotonic() + timeout
    conn = broker_connection(url)
    try:
        entity = Queue(queue, Exchange(queue, "direct", durable=True), routing_key=queue)(
            conn.default_channel
        )
        while len(got) < n and time.monotonic() < deadline:
            message = entity.get(no_ack=True)
            if message is None:
                time.sleep(0.02)
                continue
            got.append(message)
    finally:
        conn.release()
    assert len(got) == n, f"{len(got)} of {n} messages arrived in {queue!r}"
    return got


def decode(raw) -> Message:
    return Message.decode(
        raw.body, raw.content_type, raw.content_encoding, raw.headers, raw.properties, ACCEPT
    )


class Sent:
    """Collects task_sent signals."""

    def __init__(self) -> None:
        self.messages: list[Message] = []

    def __call__(self, sender, task_id, message, queue, **kwargs) -> None:
        self.messages.append(message)

    def __enter__(self) -> Sent:
        signals.task_sent.connect(self)
        return self

    def __exit__(self, *exc) -> None:
        signals.task_sent.disconnect(self)


# -- the contract, on every broker ----------------------------------------------------
def test_delay_arrives_as_sent(broker):
    url, queue = broker
    # Given a call with options that end up in headers and properties
    with Sent() as sent:
        result = add.apply_async(
            (2, 3), headers={"tenant": "t1"}, shadow="adding", reply_to="replies",
            expires=600, priority=5,
        )  # fmt: skip
    # When a kombu consumer reads the queue
    (raw,) = drain(url, queue, 1)
    got = decode(raw)
    # Then it reads the message that task_sent announced
    (announced,) = sent.messages
    assert got.id == result.id == announced.id
    assert (got.task, got.args, got.kwargs, got.shadow) == ("publishing.add", [2, 3], {}, "adding")
    assert got.extra_headers["tenant"] == "t1"
    assert got.reply_to == "replies" and got.correlation_id == result.id
    assert got.expires == announced.expires and got.origin == announced.origin
    assert raw.properties.get("priority") == 5
    assert raw.delivery_info.get("routing_key") == queue


def test_bulk_keeps_order_across_chunks_and_signals_each(broker):
    url, queue = broker
    with Sent() as sent:
        with publishing_batch(chunk=40):
            results = [add.delay(i, i) for i in range(39)]
            assert not sent.messages  # held until the chunk fills or the block ends
            results += [add.delay(i, i) for i in range(39, 100)]
            assert len(sent.messages) == 80  # two full chunks went out
        assert len(sent.messages) == 100
    got = [decode(m) for m in drain(url, queue, 100)]
    assert [m.id for m in got] == [r.id for r in results]
    assert [m.args for m in got] == [[i, i] for i in range(100)]


def test_delay_many_returns_results_in_order(broker):
    url, queue = broker
    results = add.delay_many([(i, 1) for i in range(5)])
    got = [decode(m) for m in drain(url, queue, 5)]
    assert [m.id for m in got] == [r.id for r in results]


def test_a_batch_that_raises_publishes_nothing(broker):
    url, queue = broker
    with pytest.raises(RuntimeError), publishing_batch():
        add.delay(1, 1)
        raise RuntimeError("changed my mind")
    add.delay(2, 2)
    (only,) = drain(url, queue, 1)
    assert decode(only).args == [2, 2]


def test_a_group_is_one_batch(broker):
    from django_tasks_q import group

    url, queue = broker
    result = group(add.s(i, i) for i in range(7)).apply_async()
    got = [decode(m) for m in drain(url, queue, 7)]
    assert {m.group for m in got} == {result.id}
    assert [m.group_index for m in got] == list(range(7))


def test_explicit_exchange_routes_through_the_binding(broker):
    url, queue = broker
    # Given a second queue bound to its own exchange under routing key "rk"
    other = _queue()
    exchange = Exchange(f"{other}-ex", "direct", durable=True)
    conn = broker_connection(url)
    try:
        Queue(other, exchange, routing_key="rk")(conn.default_channel).declare()
        # When a task is sent to that exchange and routing key
        send_task("publishing.add", (1, 2), exchange=exchange.name, routing_key="rk")
        # Then it lands in the bound queue, not the default one
        (raw,) = drain(url, other, 1)
        assert decode(raw).args == [1, 2]
    finally:
        conn.release()
        _delete_queue(url, other)


def test_threads_share_a_bounded_pool(broker):
    url, queue = broker
    if url.startswith("django"):
        pytest.skip("each thread has its own database connection; the pool is not the limit")
    with override_settings(
        TASKS_Q={"BROKER_URL": url, "DEFAULT_QUEUE": queue, "QUEUES": [queue], "BROKER_POOL_LIMIT": 2}
    ):  # fmt: skip
        errors: list[BaseException] = []

        def work() -> None:
            try:
                for i in range(50):
                    add.delay(i, 0)
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=work) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert not errors
        assert get_publisher()._lanes._count <= 2
        drain(url, queue, 300)


# -- django:// transactions -----------------------------------------------------------
@pytest.mark.django_db(transaction=True)
def test_django_batch_commits_and_rolls_back_with_the_caller():
    queue = _queue()
    with override_settings(TASKS_Q={"BROKER_URL": "django://", "DEFAULT_QUEUE": queue}):
        with pytest.raises(RuntimeError), transaction.atomic():
            with publishing_batch():
                add.delay(1, 1)
                add.delay(2, 2)
            raise RuntimeError("roll back")
        with transaction.atomic():
            add.delay_many([(3, 3), (4, 4)])
        assert [decode(m).args for m in drain("django://", queue, 2)] == [[3, 3], [4, 4]]
        with broker_connection("django://") as conn:
            assert Queue(queue)(conn.default_channel).get(no_ack=True) is None


# -- the Redis writer -----------------------------------------------------------------
@pytest.fixture
def redis_broker(redis_url):
    queue = _queue()
    with override_settings(
        TASKS_Q={"BROKER_URL": redis_url, "DEFAULT_QUEUE": queue, "QUEUES": [queue]}
    ):
        client = redis.Redis.from_url(redis_url)
        yield redis_url, queue, client
        _delete_queue(redis_url, queue)
        client.close()


@pytest.mark.redis
def test_redis_payload_is_what_the_transport_writes(redis_broker):
    url, queue, client = redis_broker
    # Given one message published by us and the same one through kombu's Producer
    add.apply_async((1, 2), task_id="ours", priority=3)
    encoded = Message(task="publishing.add", id="ours", args=[1, 2], priority=3).encode()
    conn = broker_connection(url)
    try:
        Producer(conn.default_channel).publish(
            encoded.body, exchange=queue, routing_key=queue, headers=encoded.headers,
            content_type=encoded.content_type, content_encoding=encoded.content_encoding,
            priority=3, delivery_mode=2, **{k: v for k, v in encoded.properties.items() if k != "priority"},
        )  # fmt: skip
    finally:
        conn.release()
    # Then both sit in the same priority list with the same envelope (tags aside)
    band = [k for k in client.keys(f"{queue}*") if k != queue.encode()]
    assert len(band) == 1
    from kombu.utils.json import loads

    ours, theirs = (loads(raw) for raw in client.lrange(band[0], 0, -1)[::-1])
    for envelope in (ours, theirs):
        envelope["properties"].pop("delivery_tag")  # a fresh uuid per publish
        envelope["headers"].pop("origin")  # the sender's pid@host (Message() has none)
    assert ours == theirs


@pytest.mark.redis
def test_redis_recovers_a_flushed_script(redis_broker):
    url, queue, client = redis_broker
    add.delay(1, 1)
    client.script_flush()
    add.delay(2, 2)
    client.script_flush()
    add.delay_many([(3, 3), (4, 4)])
    assert [decode(m).args for m in drain(url, queue, 4)] == [[1, 1], [2, 2], [3, 3], [4, 4]]


@pytest.mark.redis
def test_redis_reconnects_when_the_server_drops_the_connection(redis_broker):
    url, queue, client = redis_broker
    add.delay(1, 1)
    lane = get_publisher()._lanes._idle[-1]
    connection = lane.writer._connection
    connection.send_command("CLIENT", "ID")
    client.client_kill_filter(_id=connection.read_response())
    add.delay(2, 2)  # the dead socket fails, the lane reconnects, the publish is retried
    assert [decode(m).args for m in drain(url, queue, 2)] == [[1, 1], [2, 2]]


@pytest.mark.redis
def test_redis_far_eta_waits_in_the_delayed_store(redis_broker):
    url, queue, client = redis_broker
    result = add.apply_async((1, 1), countdown=3600)
    members = [m.decode() for m in client.zrange("tasks_q:delayed", 0, -1)]
    assert any(m.startswith(f"{result.id}|") for m in members)
    from django_tasks_q.messaging.redis.delayed import DelayedStore

    DelayedStore(client, "\x06\x16").remove(result.id)


@pytest.mark.redis
def test_redis_publish_after_fork_uses_a_new_connection(redis_broker):
    url, queue, client = redis_broker
    add.delay(1, 1)
    pid = os.fork()
    if pid == 0:  # the child: its own publisher, its own sockets
        code = 0
        try:
            add.delay(2, 2)
        except BaseException:
            code = 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    add.delay(3, 3)
    assert sorted(decode(m).args[0] for m in drain(url, queue, 3)) == [1, 2, 3]


def test_eager_mode_runs_a_batch_at_once():
    with override_settings(TASKS_Q={"BROKER_URL": "memory://", "ALWAYS_EAGER": True}):
        with Sent() as sent, publishing_batch():
            results = add.delay_many([(1, 2), (3, 4)])
            assert [r.get() for r in results] == [3, 7]  # ran inside the block
        assert not sent.messages  # nothing was published


def test_chunk_must_be_positive():
    with pytest.raises(ValueError, match="positive int"), publishing_batch(chunk=0):
        pass
