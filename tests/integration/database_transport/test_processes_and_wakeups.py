"""What ``django://`` promises beyond the broker contract (DESIGN D3, docs/brokers.md): several consumer processes, LISTEN/NOTIFY wake-ups, fork safety.

Runs on SQLite by default and on PostgreSQL with ``TQ_DATABASE=postgres``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import warnings
from typing import Any

import pytest
from django.db import connection, connections, transaction
from django.utils import timezone
from kombu import Consumer

from django_tasks_q.messaging.connection import broker_connection
from django_tasks_q.messaging.database_conn import own_connection
from tests.integration.test_broker_contract import wait_for

from .helpers import (
    ROOT,
    drain_once,
    get,
    models,
    on_postgres,
    publish,
    rows,
)

pytestmark = pytest.mark.django_db(transaction=True)


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
                        "database_transport.helpers import consumer_main; consumer_main()",
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
        wait_for(lambda: received or drain_once(conn), what="delivery after reconnecting")
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
