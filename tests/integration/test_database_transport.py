"""What ``django://`` promises beyond the broker contract (DESIGN D3, docs/brokers.md).

Transactions, reservation by owner, dead-owner release, several consumer
processes on one database, LISTEN/NOTIFY, fanout and pidbox, fork safety.
Runs on SQLite by default and on PostgreSQL with ``TQ_DATABASE=postgres``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.db import connection, connections, transaction
from django.test import override_settings
from django.utils import timezone
from kombu import Connection, Consumer, Exchange, Producer, Queue, pidbox

from django_tasks_q.messaging.connection import broker_connection
from django_tasks_q.messaging.database import release_dead_owners
from django_tasks_q.messaging.database_conn import own_connection
from tests.integration.test_broker_contract import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parents[2]
on_postgres = pytest.mark.skipif(
    os.environ.get("TQ_DATABASE") != "postgres",
    reason="PostgreSQL only: run with TQ_DATABASE=postgres",
)


def models():
    from django_tasks_q.models import QueueMessage, WorkerHeartbeat

    return QueueMessage, WorkerHeartbeat


@pytest.fixture
def connect() -> Iterator[Callable[..., Connection]]:
    opened: list[Connection] = []

    def connect(**options: Any) -> Connection:
        options.setdefault("polling_interval", 0.05)
        conn = broker_connection("django://", transport_options=options)
        conn.ensure_connection(max_retries=1)
        opened.append(conn)
        return conn

    yield connect
    for conn in opened:
        conn.close()


@pytest.fixture
def queue() -> Queue:
    name = f"tq-db-{uuid.uuid4().hex[:10]}"
    return Queue(name, Exchange(name, type="direct"), routing_key=name)


def publish(conn: Connection, queue: Queue, body: Any, **kwargs: Any) -> None:
    Producer(conn.default_channel).publish(
        body, exchange=queue.exchange, routing_key=queue.routing_key, declare=[queue], **kwargs
    )


def get(conn: Connection, queue: Queue, timeout: float = 10.0) -> Any:
    bound = queue(conn.default_channel)
    return wait_for(lambda: bound.get(no_ack=False), timeout, f"a message on {queue.name}")


def rows(queue: Queue) -> list[Any]:
    QueueMessage, _ = models()
    return list(QueueMessage.objects.filter(queue=queue.name).order_by("id"))


def heartbeat_settings(interval: float, timeout: float) -> override_settings:
    return override_settings(
        TASKS_Q={
            **django_settings.TASKS_Q,
            "HEARTBEAT_INTERVAL": interval,
            "HEARTBEAT_TIMEOUT": timeout,
        }
    )


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


# -- dead owners ----------------------------------------------------------------
def reserve_as(queue: Queue, owner: str, reserved_ago: float) -> None:
    QueueMessage, _ = models()
    QueueMessage.objects.filter(queue=queue.name).update(
        owner=owner,
        reserved_at=timezone.now() - timedelta(seconds=reserved_ago),
        delivery_count=1,
    )


def beat_as(owner: str, seen_ago: float) -> None:
    _, WorkerHeartbeat = models()
    WorkerHeartbeat.objects.update_or_create(
        owner=owner,
        defaults={
            "hostname": "elsewhere",
            "last_seen": timezone.now() - timedelta(seconds=seen_ago),
        },
    )


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
        wait_for(lambda: received or _drain(conn), what="the released message")
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


# -- several processes ------------------------------------------------------------
def consumer_main() -> None:
    """A consumer process: drain ``TQ_TEST_QUEUE``, write what it got to ``TQ_TEST_OUT``.

    It stops once the file ``TQ_TEST_DONE`` exists (everything is published) and no
    message came for a second.
    """
    name = os.environ["TQ_TEST_QUEUE"]
    seen: list[int] = []
    queue = Queue(name, Exchange(name, type="direct"), routing_key=name)

    def on_message(body: Any, message: Any) -> None:
        seen.append(body["n"])
        message.ack()

    conn = broker_connection("django://", transport_options={"polling_interval": 0.05})
    with conn, Consumer(conn, [queue], callbacks=[on_message], prefetch_count=10):
        done, last = Path(os.environ["TQ_TEST_DONE"]), time.monotonic()
        while not (done.exists() and time.monotonic() - last > 1.0):
            try:
                conn.drain_events(timeout=0.5)
                last = time.monotonic()
            except TimeoutError:
                pass
    Path(os.environ["TQ_TEST_OUT"]).write_text(json.dumps(seen))


def test_several_consumer_processes_take_every_message_exactly_once(connect, queue, tmp_path):
    total, workers = 2000, 4
    producer = connect()
    queue(producer.default_channel).declare()
    for n in range(total // 2):
        publish(producer, queue, {"n": n})
    done = tmp_path / "all-published"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "testproject.settings",
        "TQ_TEST_QUEUE": queue.name,
        "TQ_TEST_DONE": str(done),
    }
    db = connection.settings_dict["NAME"]
    db_env = {"sqlite": "SQLITE_PATH", "postgresql": "POSTGRES_DB", "mysql": "MYSQL_DB"}
    env[db_env[connection.vendor]] = str(db)
    procs = []
    for i in range(workers):
        out = tmp_path / f"consumer-{i}.json"
        procs.append(
            (
                out,
                subprocess.Popen(
                    [
                        sys.executable,
                        "-c",
                        "import django; django.setup(); from tests.integration."
                        "test_database_transport import consumer_main; consumer_main()",
                    ],
                    cwd=ROOT,
                    env={**env, "TQ_TEST_OUT": str(out)},
                    stderr=subprocess.PIPE,
                    text=True,
                ),
            )
        )
    # the second half is published while the consumers run
    for n in range(total // 2, total):
        publish(producer, queue, {"n": n})
    done.touch()
    consumed: list[int] = []
    for out, proc in procs:
        _, stderr = proc.communicate(timeout=240)
        assert proc.returncode == 0, stderr
        assert "locked" not in stderr, stderr
        consumed += json.loads(out.read_text())
    assert len(consumed) == total
    assert sorted(consumed) == list(range(total))
    assert rows(queue) == []


# -- wake-up ----------------------------------------------------------------------
@on_postgres
def test_listen_notify_wakes_a_waiting_consumer_well_before_its_poll(connect, queue):
    conn = connect(polling_interval=5.0)
    queue(conn.default_channel).declare()
    published_at: list[float] = []

    def publish_from_another_connection() -> None:
        with broker_connection("django://") as other:
            published_at.append(time.monotonic())
            publish(other, queue, {"n": 1})
        connections.close_all()

    received: list[tuple[float, Any]] = []
    with Consumer(conn, [queue], callbacks=[lambda b, m: received.append((time.monotonic(), m))]):
        timer = threading.Timer(0.3, publish_from_another_connection)
        timer.start()
        conn.drain_events(timeout=5)
        timer.join()
    delivered_at, message = received[0]
    assert delivered_at - published_at[0] < 1.0
    message.ack()


@on_postgres
def test_a_dropped_database_connection_is_a_connection_error_and_is_replaced(connect, queue):
    import psycopg

    conn = connect()
    publish(conn, queue, {"n": 1})
    received: list[Any] = []
    with Consumer(conn, [queue], callbacks=[lambda b, m: received.append(m)]):
        # Given the server ends the consumer's database session (its own connection)
        with own_connection(connection.alias) as own:
            own.ensure_connection()
            backend = own.connection.info.backend_pid
        with psycopg.connect(**connection.get_connection_params(), autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", [backend])
        # Then the next drain fails with an error kombu treats as a connection error
        with pytest.raises(conn.connection_errors):
            conn.drain_events(timeout=1)
        # and the one after reconnects and delivers
        wait_for(lambda: received or _drain(conn), what="delivery after reconnecting")
    received[0].ack()
    assert rows(queue) == []


@on_postgres
def test_the_claim_can_use_the_partial_ready_index():
    from django_tasks_q.messaging.database_sql import _PG_CLAIM

    QueueMessage, _ = models()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute(
            "EXPLAIN " + _PG_CLAIM.format(t=QueueMessage._meta.db_table),
            ["q", timezone.now(), 10, "owner", timezone.now()],
        )
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "tasks_q_msg_ready" in plan, plan


# -- fanout and pidbox ----------------------------------------------------------------
def _drain(conn: Connection) -> None:
    try:
        conn.drain_events(timeout=0.1)
    except TimeoutError:
        pass


def test_a_fanout_message_reaches_every_bound_queue_once(connect):
    exchange = Exchange(f"tq-fan-{uuid.uuid4().hex[:8]}", type="fanout")
    a, b = connect(), connect()
    got: dict[str, list[Any]] = {"a": [], "b": []}
    with (
        Consumer(
            a,
            [Queue(f"{exchange.name}-a", exchange)],
            callbacks=[lambda b_, m: got["a"].append(b_)],
            no_ack=True,
        ),
        Consumer(
            b,
            [Queue(f"{exchange.name}-b", exchange)],
            callbacks=[lambda b_, m: got["b"].append(b_)],
            no_ack=True,
        ),
    ):
        Producer(connect().default_channel).publish(
            {"hello": 1}, exchange=exchange, declare=[exchange]
        )
        wait_for(
            lambda: (got["a"] and got["b"]) or (_drain(a), _drain(b), None)[-1], what="both copies"
        )
        _drain(a), _drain(b)  # nothing more arrives
    assert got == {"a": [{"hello": 1}], "b": [{"hello": 1}]}


def test_pidbox_broadcast_with_reply(connect):
    mailbox = pidbox.Mailbox(f"tq{uuid.uuid4().hex[:6]}", type="fanout")
    listening, stop = threading.Event(), threading.Event()
    failures: list[BaseException] = []

    def node_main() -> None:
        try:
            with broker_connection(
                "django://", transport_options={"polling_interval": 0.05}
            ) as conn:
                node = mailbox(conn).Node(
                    "node-1",
                    channel=conn.default_channel,
                    handlers={"ping": lambda state, **kw: {"pong": kw}},
                )
                node.listen(callback=node.handle_message)
                listening.set()
                while not stop.is_set():
                    _drain(conn)
        except BaseException as exc:  # surfaced by the assertion below
            failures.append(exc)
            listening.set()
        finally:
            connections.close_all()

    thread = threading.Thread(target=node_main)
    thread.start()
    try:
        assert listening.wait(10)
        replies = mailbox(connect())._broadcast("ping", {"x": 1}, reply=True, timeout=5, limit=1)
    finally:
        stop.set()
        thread.join(10)
    assert not failures, failures
    assert replies == [{"node-1": {"pong": {"x": 1}}}]


# -- fork -------------------------------------------------------------------------
def test_a_forked_child_never_uses_the_parents_database_connection(connect, queue):
    # Given a parent with an open database connection and a broker connection
    conn = connect()
    publish(conn, queue, {"n": 1})
    publish(conn, queue, {"n": 2})
    parent_socket = connection.connection
    assert parent_socket is not None
    with own_connection(connection.alias) as own:  # the consumer's own connection, open
        own.ensure_connection()
        parent_own = own.connection
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # "process is multi-threaded"
        pid = os.fork()
    if pid == 0:  # the child: consume one message on the inherited broker connection
        code = 1
        try:
            assert connection.connection is not parent_socket
            message = get(conn, queue)
            owner = conn.transport.owner
            assert owner.split(":")[1] == str(os.getpid())
            message.ack()
            with own_connection(connection.alias) as own:
                assert own.connection is not None and own.connection is not parent_own
            conn.close()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    # Then the parent's connections still work, and one message is left for it
    assert connection.connection is parent_socket
    with own_connection(connection.alias) as own:
        assert own.connection is parent_own
    assert len(rows(queue)) == 1
    message = get(conn, queue)
    assert message.payload["n"] in (1, 2)
    message.ack()
    assert rows(queue) == []
