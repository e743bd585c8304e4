"""``manage.py tasks_q``: through ``call_command`` for behaviour, through a real process for exit codes.

The broker is the one the test settings name (``TQ_BROKER_URL``, default ``django://``),
with queues no other test uses.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.utils import timezone

from django_tasks_q.control import control
from django_tasks_q.deadletter import dead_letter
from django_tasks_q.models import DeadLetter, RevokedTask, WorkerHeartbeat
from django_tasks_q.results import get_store
from tests.control_fakes import (
    FakeWorker,
    drop_queues,
    isolated_broker,
    running_node,
    subprocess_env,
    wait_for,
)

ROOT = Path(__file__).resolve().parents[2]
ADD = "testproject.demo.tasks.add"
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


class Terminal(io.StringIO):
    """A stdin that claims to be a terminal, with a prepared answer."""

    def isatty(self) -> bool:
        return True


@pytest.fixture
def queues(transactional_db: None) -> Iterator[list[str]]:
    with isolated_broker(settings.TASKS_Q["BROKER_URL"]) as names:
        yield names


def run(*args: str, stdin=None) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    options = {"stdout": out, "stderr": err}
    if stdin is not None:
        options["stdin"] = stdin
    call_command("tasks_q", *args, **options)
    return out.getvalue(), err.getvalue()


def fails(*args: str, stdin=None) -> CommandError:
    with pytest.raises(CommandError) as info:
        run(*args, stdin=stdin)
    return info.value


# -- call ---------------------------------------------------------------------------------


def test_call_prints_the_id_and_enqueues(queues: list[str]) -> None:
    default, images = queues
    out, _ = run("call", ADD, "--args", "[2, 2]", "--queue", images)
    assert UUID.match(out.strip())
    assert wait_for(lambda: control.queue_sizes([images])[images] == 1)
    assert control.queue_sizes([default])[default] == 0


def test_call_with_kwargs_countdown_and_eta(queues: list[str]) -> None:
    default, _ = queues
    out, err = run("call", ADD, "--kwargs", '{"x": 1, "y": 2}', "--countdown", "0")
    assert err == ""
    run("call", ADD, "--args", "[1, 2]", "--eta", "2000-01-01T00:00:00")
    assert wait_for(lambda: control.queue_sizes([default])[default] == 2)


def test_call_of_an_unregistered_task_warns_and_sends(queues: list[str]) -> None:
    default, _ = queues
    out, err = run("call", "remote.only_task")
    assert UUID.match(out.strip())
    assert "'remote.only_task' is not registered" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--args", "[1, 2"], "--args is not valid JSON"),
        (["--args", '{"x": 1}'], "--args must be a JSON list, got dict"),
        (["--kwargs", "[1]"], "--kwargs must be a JSON object, got list"),
        (["--kwargs", "{x: 1}"], "--kwargs is not valid JSON"),
        (["--eta", "next tuesday"], "--eta 'next tuesday' is not an ISO-8601"),
        (["--countdown", "-5"], "--countdown must be >= 0"),
        (["--args", "[1, 2, 3]"], "called with wrong arguments"),
    ],
)
def test_call_with_bad_flags_exits_2_naming_the_flag(
    queues: list[str], args: list[str], message: str
) -> None:
    error = fails("call", ADD, *args)
    assert error.returncode == 2
    assert message in str(error)
    assert control.queue_sizes()[queues[0]] == 0


# -- purge --------------------------------------------------------------------------------


def _fill(queue: str, n: int) -> None:
    for i in range(n):
        run("call", ADD, "--args", f"[{i}, {i}]", "--queue", queue)
    wait_for(lambda: control.queue_sizes([queue])[queue] == n)


def test_purge_refuses_without_a_terminal(queues: list[str]) -> None:
    default, _ = queues
    _fill(default, 2)
    error = fails("purge", stdin=io.StringIO(""))
    assert error.returncode == 1
    assert "Refusing to purge 2 waiting messages" in str(error) and "--force" in str(error)
    assert control.queue_sizes([default])[default] == 2


def test_purge_asks_and_respects_the_answer(queues: list[str]) -> None:
    default, images = queues
    _fill(default, 1)
    _fill(images, 2)

    out, _ = run("purge", stdin=Terminal("n\n"))
    assert "Purge 3 waiting messages from" in out and "Nothing purged." in out
    assert control.queue_sizes() == {default: 1, images: 2}

    out, _ = run("purge", "-Q", images, stdin=Terminal("yes\n"))
    assert "Purged 2 messages" in out
    assert control.queue_sizes() == {default: 1, images: 0}


def test_purge_force(queues: list[str]) -> None:
    default, images = queues
    _fill(default, 2)
    out, _ = run("purge", "--force")
    assert f"Purged 2 messages from {default}, {images}." in out
    out, _ = run("purge", "--noinput", "-Q", default)
    assert "Purged 0 messages" in out


# -- workers ------------------------------------------------------------------------------


def test_status_without_workers_exits_69(queues: list[str]) -> None:
    error = fails(
        "status", "-d", "nobody@nowhere", "--timeout", "0.3"
    )  # other runs may share the broker
    assert error.returncode == 69
    assert "No workers are alive" in str(error)


def test_status_lists_heartbeats_and_pings(queues: list[str]) -> None:
    worker = FakeWorker()
    WorkerHeartbeat.objects.create(
        owner=f"owner-{uuid.uuid4()}", hostname=worker.hostname, pid=321, queues=queues,
        concurrency=4, last_seen=timezone.now(),
    )  # fmt: skip
    WorkerHeartbeat.objects.create(
        owner=f"owner-{uuid.uuid4()}",
        hostname="dead@test",
        pid=1,
        last_seen=timezone.now() - timedelta(hours=1),
    )
    with running_node(worker):
        out, _ = run("status", "-d", worker.hostname, "--timeout", "5")
        data = json.loads(run("status", "-d", worker.hostname, "--timeout", "5", "--json")[0])
    assert f"{worker.hostname}: OK (pid 321, queues {','.join(queues)}, concurrency 4" in out
    assert "ping: pong" in out and "1 worker alive." in out
    assert "dead@test" not in out
    assert [w["hostname"] for w in data["workers"]] == [worker.hostname]


def test_inspect_prints_replies_and_json(queues: list[str]) -> None:
    worker = FakeWorker(active=[{"id": "a-1", "name": "demo.add", "args": [1, 2], "kwargs": {}}])
    with running_node(worker):
        out, _ = run("inspect", "ping", "-d", worker.hostname, "-t", "5")
        active, _ = run("inspect", "active", "-d", worker.hostname, "-t", "5")
        registered = json.loads(
            run("inspect", "registered", "-d", worker.hostname, "-t", "5", "--json")[0]
        )
    assert f"{worker.hostname}: pong" in out and "1 worker replied." in out
    assert (
        f"{worker.hostname}: 1 active" in active and "demo.add[a-1] args=[1, 2] kwargs={}" in active
    )
    assert registered == {worker.hostname: ["demo.add", "demo.mul"]}


def test_inspect_without_replies_exits_69(queues: list[str]) -> None:
    error = fails("inspect", "ping", "-d", "nobody@nowhere", "-t", "0.2")
    assert error.returncode == 69
    assert "No workers replied within 0.2s" in str(error)


# -- revoke and result --------------------------------------------------------------------


def test_revoke_persists_and_reports(queues: list[str]) -> None:
    out, _ = run("revoke", "id-1", "id-2", "--terminate", "--signal", "KILL", "-t", "0.2")
    assert "Revoked id-1 (terminate with SIGKILL)" in out and "Revoked id-2" in out
    assert set(RevokedTask.objects.values_list("task_id", flat=True)) >= {"id-1", "id-2"}
    error = fails("revoke", "id-3", "--signal", "SIGWHAT")
    assert error.returncode == 2 and "--signal: Unknown signal 'SIGWHAT'" in str(error)


def test_result_shows_state_and_value(queues: list[str]) -> None:
    get_store().mark_as_done("res-1", {"total": 4})
    out, _ = run("result", "res-1")
    assert "state: SUCCESS" in out and 'result: {"total": 4}' in out
    meta = json.loads(run("result", "res-1", "--json")[0])
    assert meta["status"] == "SUCCESS" and meta["result"] == {"total": 4}

    get_store().mark_as_failure("res-2", ValueError("boom"), traceback="Traceback: boom")
    out, _ = run("result", "res-2", "--wait", "5")
    assert "state: FAILURE" in out and "error: ValueError: boom" in out and "Traceback: boom" in out


def test_result_wait_times_out_with_exit_1(queues: list[str]) -> None:
    error = fails("result", "never-runs", "--wait", "0.2")
    assert error.returncode == 1
    assert "Task never-runs is still PENDING after waiting 0.2s" in str(error)


# -- cleanup and dead letters -------------------------------------------------------------


def test_cleanup_deletes_expired_revokes(queues: list[str]) -> None:
    RevokedTask.objects.create(task_id="expired", expires=timezone.now() - timedelta(seconds=1))
    out, _ = run("cleanup")
    assert "revokes: 1" in out and "Cleanup done." in out
    assert not RevokedTask.objects.filter(task_id="expired").exists()


def test_deadletters_list_replay_purge(queues: list[str]) -> None:
    default, images = queues
    first = dead_letter({"body": b'[[1, 1], {}, {}]', "headers": {"id": "d-1", "task": "demo.add"},
                         "content_type": "application/json", "content_encoding": "utf-8"},
                        reason="max-deliveries", queue=default)  # fmt: skip
    dead_letter({"body": "x"}, reason="decode-error", detail="bad body")

    out, _ = run("deadletters", "list")
    assert (
        "max-deliveries  demo.add[d-1]" in out
        and "decode-error" in out
        and "2 of 2 dead letters shown." in out
    )
    listed = json.loads(run("deadletters", "list", "--json", "--limit", "1")[0])
    assert len(listed) == 1

    out, _ = run("deadletters", "replay", str(first.pk), "--queue", images)
    assert f"Replayed dead letter {first.pk} (task d-1) to {images}." in out
    assert wait_for(lambda: control.queue_sizes([images])[images] == 1)
    error = fails("deadletters", "replay", str(first.pk))
    assert error.returncode == 1 and f"No dead letter with id {first.pk}" in str(error)

    assert fails("deadletters", "purge", stdin=io.StringIO("")).returncode == 1
    out, _ = run("deadletters", "purge", "--force")
    assert "Deleted 1 dead letter." in out
    assert DeadLetter.objects.count() == 0


# -- a real process: exit codes and messages, never a traceback ---------------------------


def manage(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = subprocess_env()
    return subprocess.run(
        [sys.executable, "manage.py", "tasks_q", *args],
        cwd=ROOT, env=env, input=stdin, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["call", ADD, "--args", "not json"], 2, "--args is not valid JSON"),
        (["call", ADD, "--kwargs", "[]"], 2, "--kwargs must be a JSON object"),
        (
            ["call", ADD, "--countdown", "soon"],
            2,
            "argument --countdown: invalid float value: 'soon'",
        ),
        (["bogus"], 2, "invalid choice: 'bogus'"),
        ([], 2, "the following arguments are required: subcommand"),
        (["inspect", "everything"], 2, "argument method: invalid choice: 'everything'"),
        (["revoke"], 2, "the following arguments are required: ID"),
        (["revoke", "x", "--signal", "NOPE"], 2, "--signal: Unknown signal 'NOPE'"),
        (["result", "x", "--wait", "-1"], 2, "--wait must be > 0 seconds"),
        (["deadletters", "replay", "abc"], 2, "invalid int value: 'abc'"),
        (["purge", "-Q", "nobody-uses-this-queue"], 1, "Refusing to purge"),
    ],
)
def test_process_exit_codes(
    transactional_db: None, args: list[str], code: int, message: str
) -> None:
    done = manage(*args, stdin="")
    assert done.returncode == code, done.stderr
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def test_process_call_revoke_result(transactional_db: None) -> None:
    queue = f"cmd-{uuid.uuid4().hex[:8]}"
    try:
        called = manage("call", ADD, "--args", "[1, 2]", "--queue", queue)
    finally:
        drop_queues(settings.TASKS_Q["BROKER_URL"], [queue])
    assert called.returncode == 0, called.stderr
    task_id = called.stdout.strip()
    assert UUID.match(task_id)

    revoked = manage("revoke", task_id, "-t", "0.2")
    assert revoked.returncode == 0, revoked.stderr
    assert f"Revoked {task_id}" in revoked.stdout
    assert RevokedTask.objects.filter(task_id=task_id).exists()

    result = manage("result", task_id)
    assert result.returncode == 0, result.stderr
    assert "state: REVOKED" in result.stdout


def test_process_status_without_workers(transactional_db: None) -> None:
    done = manage("status", "-d", f"nobody-{uuid.uuid4().hex[:6]}@test", "-t", "0.2")
    assert done.returncode == 69
    assert "No workers are alive" in done.stderr and "Traceback" not in done.stderr
