"""Interoperation with the real ``celery`` package, both ways (DESIGN D2).

* Encoded messages, no broker: a message Celery builds decodes into our
  ``Message`` with the same fields; a message we publish is parsed by Celery's
  worker ``Request`` and executed by Celery's tracer.
* Through real brokers (Redis and RabbitMQ): a Celery client publishes and we
  consume the raw message; we publish and a real Celery worker (a subprocess,
  ``celery -A tests.integration.celery_peer worker``) runs the task, its link
  callback and its chain, and stores the results in Redis.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from django.test import override_settings
from kombu.serialization import dumps as kombu_dumps
from kombu.transport import memory

from django_tasks_q.calling import send_task
from django_tasks_q.canvas import Signature
from django_tasks_q.message import Message
from django_tasks_q.messaging.connection import broker_connection
from django_tasks_q.serialization import accepted_types
from tests import services

celery = pytest.importorskip("celery")
from celery.worker.request import Request as CeleryRequest  # noqa: E402

from tests.integration import celery_peer  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
JSON = accepted_types(["json"])


def iso(value: str) -> datetime:
    return datetime.fromisoformat(value)


def wait_for(fetch, timeout: float, what: str):
    """Call ``fetch`` until it returns something not None, or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        value = fetch()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


# =============================================================================
# Encoded messages, no broker
# =============================================================================
def test_message_built_by_celery_decodes_into_equal_fields():
    # Given a protocol-v2 message exactly as Celery's producer builds it
    capp = celery_peer.app
    task_id = str(uuid.uuid4())
    callback = capp.signature("interop.mul", args=(10,), options={"queue": "q2"})
    errback = capp.signature("interop.ping")
    nxt = capp.signature("interop.add", args=(1,))
    chord_body = capp.signature("interop.ping")
    tm = capp.amqp.as_task_v2(
        task_id, "interop.add", args=(2, 3), kwargs={"k": [1, "x"]},
        countdown=30, expires=120, retries=2, root_id="root-1", parent_id="parent-1",
        group_id="group-1", group_index=4, time_limit=60, soft_time_limit=50,
        callbacks=[callback], errbacks=[errback], chain=[nxt], chord=chord_body,
        shadow="add-shadow", reply_to="reply-q", ignore_result=True,
    )  # fmt: skip
    content_type, encoding, body = kombu_dumps(tm.body, serializer="json")

    # When we decode it
    m = Message.decode(body, content_type, encoding, tm.headers, tm.properties, JSON)

    # Then every field is what Celery meant
    assert (m.id, m.task, m.name) == (task_id, "interop.add", "add-shadow")
    assert (m.args, m.kwargs) == ([2, 3], {"k": [1, "x"]})
    assert m.eta == iso(tm.headers["eta"]) and m.eta.tzinfo is not None
    assert m.expires == iso(tm.headers["expires"])
    assert abs((m.eta - datetime.now(UTC)) - timedelta(seconds=30)) < timedelta(seconds=5)
    assert m.retries == 2
    assert (m.root_id, m.parent_id, m.group, m.group_index) == ("root-1", "parent-1", "group-1", 4)
    assert m.timelimit == (60, 50)  # (hard, soft)
    assert m.callbacks[0]["task"] == "interop.mul" and m.callbacks[0]["args"] == [10]
    assert m.callbacks[0]["options"]["queue"] == "q2"
    assert m.errbacks[0]["task"] == "interop.ping"
    assert [s["task"] for s in m.chain] == ["interop.add"]
    assert m.chord["task"] == "interop.ping"
    assert (m.reply_to, m.correlation_id, m.ignore_result) == ("reply-q", task_id, True)
    assert m.origin == tm.headers["origin"]


@pytest.fixture
def memory_broker():
    memory.Channel.queues.clear()
    with override_settings(TASKS_Q={"BROKER_URL": "memory://"}):
        conn = broker_connection("memory://")
        yield conn
        conn.release()
    memory.Channel.queues.clear()


def test_message_we_publish_is_parsed_and_run_by_celerys_worker_request(memory_broker):
    # Given a message we publish, with lineage, options and a link callback
    task_id = str(uuid.uuid4())
    send_task(
        "interop.echo", args=[1, "two"], kwargs={"three": 3}, task_id=task_id, queue="interop",
        countdown=60, expires=600, headers={"tenant": "acme"}, group_id="g-1", group_index=0,
        parent_id="p-1", root_id="r-1", time_limit=30, soft_time_limit=20, priority=3,
        link=Signature("interop.ping", immutable=True),
    )  # fmt: skip
    raw = memory_broker.default_channel.basic_get("interop", no_ack=False)
    assert raw is not None

    # When Celery's worker parses it
    capp = celery_peer.app
    req = CeleryRequest(raw, app=capp, task=capp.tasks["interop.echo"])

    # Then Celery reads the same fields
    assert (req.id, req.task_name) == (task_id, "interop.echo")
    assert (req.args, req.kwargs) == ([1, "two"], {"three": 3})
    assert req.eta is not None and abs(req.eta - datetime.now(UTC) - timedelta(seconds=60)) < timedelta(seconds=5)
    assert req.expires is not None
    assert (req.root_id, req.parent_id) == ("r-1", "p-1")
    assert req.time_limits == [30, 20]  # Celery's (hard, soft)
    assert req.request_dict["group"] == "g-1"
    assert req.request_dict["tenant"] == "acme"
    assert req.request_dict["correlation_id"] == task_id

    # And Celery's tracer runs it: the result is what the task saw
    req.execute()
    seen = capp.AsyncResult(task_id).get(timeout=5)
    assert seen["id"] == task_id and seen["args"] == [1, "two"] and seen["kwargs"] == {"three": 3}
    assert (seen["root_id"], seen["parent_id"], seen["group"]) == ("r-1", "p-1", "g-1")
    assert seen["timelimit"] == [30, 20]
    assert seen["tenant"] == "acme"


def test_link_callback_of_our_message_is_sent_by_celery_and_decoded_by_us(memory_broker):
    # Given our message for interop.add with a link to interop.mul(10) on queue "back"
    task_id = str(uuid.uuid4())
    send_task(
        "interop.add", args=[2, 3], task_id=task_id, queue="interop",
        link=Signature("interop.mul", [10], options={"queue": "back"}),
    )  # fmt: skip
    raw = memory_broker.default_channel.basic_get("interop", no_ack=False)
    capp = celery_peer.app

    # When Celery runs it, Celery publishes the callback
    CeleryRequest(raw, app=capp, task=capp.tasks["interop.add"]).execute()
    assert capp.AsyncResult(task_id).get(timeout=5) == 5

    # Then we decode Celery's callback message: mul(5, 10), child of our task
    back = memory_broker.default_channel.basic_get("back", no_ack=True)
    assert back is not None, "Celery did not publish the link callback"
    m = Message.decode(back.body, back.content_type, back.content_encoding, back.headers, back.properties, JSON)
    assert (m.task, m.args) == ("interop.mul", [5, 10])
    assert (m.parent_id, m.root_id) == (task_id, task_id)


# =============================================================================
# Through real brokers
# =============================================================================
@pytest.fixture(scope="module", params=["redis", "amqp"])
def broker_url(request) -> str:
    services.require(request.param)
    services.require("redis")  # Celery's results go to Redis in every case
    return services.REDIS_URL if request.param == "redis" else services.AMQP_URL


def celery_client(broker: str):
    return celery.Celery(
        "interop_client", broker=broker, backend=services.REDIS_URL, set_as_current=False
    )


def test_celery_client_message_through_the_broker_decodes_into_equal_fields(broker_url):
    # Given a Celery client that sends a task to a fresh queue on a real broker
    queue = f"interop-in-{uuid.uuid4().hex[:8]}"
    capp = celery_client(broker_url)
    task_id = str(uuid.uuid4())
    conn = broker_connection(broker_url)
    try:
        capp.send_task(
            "interop.add", args=(2, 3), kwargs={"k": "v"}, task_id=task_id, queue=queue,
            countdown=60, expires=600, retries=1, root_id="r-9", parent_id="p-9",
            group_id="g-9", group_index=2, time_limit=40, soft_time_limit=30,
            link=capp.signature("interop.mul", args=(2,)), headers={"tenant": "acme"},
        )  # fmt: skip

        # When we consume the raw message from that queue
        raw = wait_for(
            lambda: conn.default_channel.basic_get(queue, no_ack=True), 15, f"a message in {queue}"
        )
        m = Message.decode(
            raw.body, raw.content_type, raw.content_encoding, raw.headers, raw.properties, JSON
        )

        # Then the fields are Celery's
        assert (m.id, m.task, m.args, m.kwargs) == (task_id, "interop.add", [2, 3], {"k": "v"})
        assert m.eta is not None and abs(m.eta - datetime.now(UTC) - timedelta(seconds=60)) < timedelta(seconds=10)
        assert m.expires is not None and m.expires > m.eta
        assert (m.retries, m.root_id, m.parent_id) == (1, "r-9", "p-9")
        assert (m.group, m.group_index) == ("g-9", 2)
        assert m.timelimit == (40, 30)
        assert m.callbacks[0]["task"] == "interop.mul"
        assert m.extra_headers["tenant"] == "acme"
    finally:
        _delete_queue(conn, queue)
        conn.release()
        capp.close()


def _delete_queue(conn, queue: str) -> None:
    try:
        conn.default_channel.queue_delete(queue)
    except Exception:  # best effort: the queue may not exist on this broker
        pass


class CeleryWorker:
    """A real Celery worker in a subprocess, consuming one queue."""

    def __init__(self, broker: str, queue: str) -> None:
        self.broker, self.queue = broker, queue
        self.log = tempfile.NamedTemporaryFile(prefix="celery-peer-", suffix=".log", delete=False)
        env = dict(os.environ)
        env.update(
            PEER_BROKER_URL=broker,
            PEER_RESULT_BACKEND=services.REDIS_URL,
            PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
        )
        env.pop("DJANGO_SETTINGS_MODULE", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "tests.integration.celery_peer", "worker",
             "--pool", "solo", "-Q", queue, "-n", f"{queue}@%h", "--without-mingle",
             "--without-gossip", "--without-heartbeat", "-l", "WARNING"],
            cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip

    def output(self) -> str:
        return Path(self.log.name).read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        # Celery's warm shutdown over AMQP takes ~10 s; the peer holds nothing we
        # need once its results are stored, so it gets 3 s before SIGKILL.
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.log.close()
        os.unlink(self.log.name)


@pytest.fixture(scope="module")
def celery_worker(broker_url):
    """One Celery worker per broker for this module's tests (it takes seconds to start)."""
    queue = f"interop-out-{uuid.uuid4().hex[:8]}"
    worker = CeleryWorker(broker_url, queue)
    client = celery_client(broker_url)
    try:
        with override_settings(TASKS_Q={"BROKER_URL": broker_url}):
            # Ready when it has answered one task we sent (deadline, no fixed sleep).
            ping_id = send_task("interop.ping", queue=queue).id
            try:
                assert client.AsyncResult(ping_id).get(timeout=60) == "pong"
            except Exception as exc:
                pytest.fail(f"the Celery worker did not answer: {exc!r}\n{worker.output()}")
            yield worker, client
    finally:
        worker.stop()
        conn = broker_connection(broker_url)
        _delete_queue(conn, queue)
        conn.release()
        client.close()


def test_real_celery_worker_runs_our_message(celery_worker):
    worker, client = celery_worker
    result = send_task("interop.add", args=[2, 3], queue=worker.queue)
    assert client.AsyncResult(result.id).get(timeout=30) == 5


def test_real_celery_worker_sees_our_fields(celery_worker):
    worker, client = celery_worker
    result = send_task(
        "interop.echo", args=[1, [2]], kwargs={"k": None}, queue=worker.queue,
        headers={"tenant": "acme"}, group_id="g-2", group_index=1, parent_id="p-2",
        root_id="r-2", time_limit=30, soft_time_limit=20, expires=600,
    )  # fmt: skip
    seen = client.AsyncResult(result.id).get(timeout=30)
    assert seen["id"] == result.id and seen["task"] == "interop.echo"
    assert (seen["args"], seen["kwargs"]) == ([1, [2]], {"k": None})
    assert (seen["root_id"], seen["parent_id"]) == ("r-2", "p-2")
    assert (seen["group"], seen["group_index"]) == ("g-2", 1)
    assert seen["timelimit"] == [30, 20]
    assert seen["tenant"] == "acme"
    assert seen["expires"] is not None
    assert seen["origin"].startswith("gen")


def test_real_celery_worker_follows_our_link_and_chain(celery_worker):
    worker, client = celery_worker
    q = worker.queue
    link_id, first_id, last_id = (str(uuid.uuid4()) for _ in range(3))
    # add(2, 3) -> link: mul(5, 10);  chain (popped from the end): add(5, 1) then mul(6, 3)
    result = send_task(
        "interop.add", args=[2, 3], queue=q,
        link=Signature("interop.mul", [10], options={"queue": q, "task_id": link_id}),
        chain=[
            Signature("interop.mul", [3], options={"queue": q, "task_id": last_id}),
            Signature("interop.add", [1], options={"queue": q, "task_id": first_id}),
        ],
    )  # fmt: skip
    assert client.AsyncResult(result.id).get(timeout=30) == 5
    assert client.AsyncResult(link_id).get(timeout=30) == 50
    assert client.AsyncResult(first_id).get(timeout=30) == 6
    assert client.AsyncResult(last_id).get(timeout=30) == 18
