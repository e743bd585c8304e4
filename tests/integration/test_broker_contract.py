"""The broker contract: one suite of plain-kombu tests, run against every broker.

``BrokerContract`` holds the tests; each subclass names a broker URL and what
that broker can do (kombu's ``t/integration/common.py`` works the same way).
A broker that cannot do something skips that test with the reason.

* ``memory://``: always;
* ``django://`` on SQLite: the default test settings;
* ``django://`` on PostgreSQL: with ``TQ_DATABASE=postgres``;
* ``django://`` with batched acks (``ack_batch``), on whichever test database;
* ``redis://``: ``REDIS_URL`` on database 5;
* ``amqp://``: ``AMQP_URL``.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, TypeVar
from urllib.parse import urlparse, urlunparse

import pytest
from django.db import connection as db_connection
from kombu import Connection, Consumer, Exchange, Producer, Queue

from django_tasks_q.exceptions import MessageTooLarge
from django_tasks_q.message import Message
from django_tasks_q.messaging.connection import TRANSPORTS, broker_connection
from tests import services

T = TypeVar("T")

DEADLINE = 10.0


def wait_for(probe: Callable[[], T | None], timeout: float = DEADLINE, what: str = "") -> T:
    """Call ``probe`` until it returns something other than None (or fail at the deadline)."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what or probe}")
        time.sleep(0.01)


class BrokerContract:
    """Every broker must pass these."""

    #: Priority 9 is delivered before priority 0 (``None``: supported; else the skip reason).
    no_priority: str | None = None
    #: A message redelivered after reject(requeue=True) carries delivery_info['redelivered'].
    redelivered_flag: bool = True
    #: Unacked messages go back to the queue when the connection closes.
    no_restore_on_close: str | None = None
    transport_options: dict[str, Any] = {}

    @pytest.fixture
    def url(self) -> str:
        raise NotImplementedError

    @pytest.fixture
    def connect(self, url: str) -> Iterator[Callable[[], Connection]]:
        opened: list[Connection] = []

        def connect() -> Connection:
            conn = broker_connection(url, transport_options=dict(self.transport_options))
            conn.ensure_connection(max_retries=1)
            opened.append(conn)
            return conn

        yield connect
        for conn in opened:
            conn.close()

    @pytest.fixture
    def conn(self, connect: Callable[[], Connection]) -> Connection:
        return connect()

    @pytest.fixture
    def queue(self, conn: Connection, connect: Callable[[], Connection]) -> Iterator[Queue]:
        name = f"tq-contract-{uuid.uuid4().hex[:12]}"
        queue = Queue(name, Exchange(name, type="direct"), routing_key=name, max_priority=10)
        queue(conn.default_channel).declare()
        yield queue
        with connect() as cleanup:
            queue(cleanup.default_channel).delete()

    # -- helpers ----------------------------------------------------------------
    def publish(self, conn: Connection, queue: Queue, body: Any, **kwargs: Any) -> None:
        Producer(conn.default_channel).publish(
            body,
            exchange=queue.exchange,
            routing_key=queue.routing_key,
            declare=[queue],
            serializer="json",
            **kwargs,
        )

    def get(self, conn: Connection, queue: Queue, timeout: float = DEADLINE) -> Any:
        bound = queue(conn.default_channel)
        return wait_for(lambda: bound.get(no_ack=False), timeout, f"a message on {queue.name}")

    def get_nothing(self, conn: Connection, queue: Queue) -> None:
        assert queue(conn.default_channel).get(no_ack=False) is None

    def size(self, conn: Connection, queue: Queue) -> int:
        # a (re)declaration reports the count everywhere; passive ones fail on empty Redis queues
        return queue(conn.default_channel).queue_declare().message_count

    def wait_size(self, conn: Connection, queue: Queue, expected: int) -> None:
        wait_for(
            lambda: True if self.size(conn, queue) == expected else None,
            what=f"{queue.name} to hold {expected} message(s)",
        )

    # -- the contract -----------------------------------------------------------
    def test_round_trip_keeps_body_headers_and_properties(self, conn, queue):
        body = {"args": [1, "two"], "text": "héllo ✓", "nested": {"n": None}}
        self.publish(
            conn,
            queue,
            body,
            headers={"task": "demo.add", "id": "abc-123", "x-custom": "value"},
            correlation_id="abc-123",
            reply_to="replies",
        )
        received: list[Any] = []
        with Consumer(conn, [queue], callbacks=[lambda b, m: received.append((b, m))]):
            wait_for(lambda: received or _drain(conn), what="delivery")
        got, message = received[0]
        assert got == body
        assert {"task": "demo.add", "id": "abc-123", "x-custom": "value"}.items() <= (
            message.headers.items()
        )
        assert message.properties["correlation_id"] == "abc-123"
        assert message.properties["reply_to"] == "replies"
        assert message.content_type == "application/json"
        message.ack()

    def test_ack_removes_the_message(self, conn, queue, connect):
        self.publish(conn, queue, {"n": 1})
        self.get(conn, queue).ack()
        conn.close()
        # a fresh connection finds nothing: the ack was final
        other = connect()
        self.get_nothing(other, queue)
        assert self.size(other, queue) == 0

    def test_reject_with_requeue_redelivers(self, conn, queue):
        self.publish(conn, queue, {"n": 1})
        first = self.get(conn, queue)
        assert not first.delivery_info.get("redelivered")
        first.reject(requeue=True)
        again = self.get(conn, queue)
        assert again.payload == {"n": 1}
        if self.redelivered_flag:
            assert again.delivery_info.get("redelivered") is True
        again.ack()

    def test_reject_without_requeue_drops_the_message(self, conn, queue, connect):
        self.publish(conn, queue, {"n": 1})
        self.get(conn, queue).reject(requeue=False)
        conn.close()
        self.get_nothing(connect(), queue)

    def test_unacked_message_returns_when_the_connection_closes(self, conn, queue, connect):
        if self.no_restore_on_close:
            pytest.skip(self.no_restore_on_close)
        self.publish(conn, queue, {"n": 1})
        assert self.get(conn, queue).payload == {"n": 1}  # never acked
        conn.close()
        message = self.get(connect(), queue)
        assert message.payload == {"n": 1}
        message.ack()

    def test_higher_priority_is_delivered_first(self, conn, queue):
        if self.no_priority:
            pytest.skip(self.no_priority)
        for n in range(6):
            self.publish(conn, queue, {"n": n}, priority=9 if n % 2 else 0)
        self.wait_size(conn, queue, 6)
        order = []
        for _ in range(6):
            message = self.get(conn, queue)
            order.append(message.payload["n"])
            message.ack()
        assert order[:3] == [1, 3, 5]
        assert sorted(order[3:]) == [0, 2, 4]

    def test_purge_empties_the_queue(self, conn, queue):
        for n in range(3):
            self.publish(conn, queue, {"n": n})
        self.wait_size(conn, queue, 3)
        assert queue(conn.default_channel).purge() == 3
        assert self.size(conn, queue) == 0
        self.get_nothing(conn, queue)

    def test_size_counts_ready_messages(self, conn, queue):
        assert self.size(conn, queue) == 0
        for n in range(3):
            self.publish(conn, queue, {"n": n})
        self.wait_size(conn, queue, 3)
        reserved = self.get(conn, queue)  # delivered, not acked: no longer ready
        self.wait_size(conn, queue, 2)
        reserved.ack()

    def test_oversize_message_is_refused_before_it_reaches_the_queue(self, conn, queue):
        message = Message(task="demo.big", args=["x" * 4096])
        with pytest.raises(MessageTooLarge, match="MESSAGE_MAX_SIZE"):
            encoded = message.encode(max_size=1024)
            self.publish(conn, queue, encoded.body, headers=encoded.headers)
        assert self.size(conn, queue) == 0
        self.get_nothing(conn, queue)


def _drain(conn: Connection) -> None:
    try:
        conn.drain_events(timeout=0.1)
    except TimeoutError:
        pass


# -- the brokers ------------------------------------------------------------------
class TestMemory(BrokerContract):
    no_priority = "memory:// delivers in publish order (kombu's memory transport has no priorities)"
    redelivered_flag = False
    no_restore_on_close = "memory:// drops unacked messages when the connection closes"

    @pytest.fixture
    def url(self) -> str:
        return "memory://"


@pytest.mark.django_db(transaction=True)
class TestDjangoSQLite(BrokerContract):
    transport_options = {"polling_interval": 0.05}

    @pytest.fixture
    def url(self) -> str:
        if db_connection.vendor != "sqlite":
            pytest.skip(f"the test database is {db_connection.vendor}, not SQLite (TQ_DATABASE)")
        return "django://"


@pytest.mark.django_db(transaction=True)
class TestDjangoBatchedAcks(BrokerContract):
    """django:// with acks deferred and written together, on the test database."""

    transport_options = {"polling_interval": 0.05, "ack_batch": 20}

    @pytest.fixture
    def url(self) -> str:
        return "django://"


@pytest.mark.django_db(transaction=True)
@pytest.mark.postgres
class TestDjangoPostgres(BrokerContract):
    transport_options = {"polling_interval": 0.5}

    @pytest.fixture
    def url(self) -> str:
        if os.environ.get("TQ_DATABASE") != "postgres":
            pytest.skip("django:// on PostgreSQL runs with TQ_DATABASE=postgres")
        services.require("postgres")
        return "django://"


@pytest.mark.redis
class TestRedis(BrokerContract):
    if TRANSPORTS.get("redis") == "redis":
        no_priority = (
            "kombu's stock Redis transport orders priority 0 first; "
            "django_tasks_q's Redis transport will order 9 first"
        )

    @pytest.fixture
    def url(self, redis_url: str) -> str:
        parts = urlparse(redis_url)
        return urlunparse(parts._replace(path="/5"))


@pytest.mark.amqp
class TestAMQP(BrokerContract):
    @pytest.fixture
    def url(self, amqp_url: str) -> str:
        return amqp_url
