"""How the Redis result stores wait: registration and blocking pop in one round trip.

``wait_for`` registers an inbox in ``tasks_q:waiters:<id>`` and BLPOPs it; every
write pushes the meta to the registered inboxes (see ``results/redis_wait.py``).
These tests run on ``redis://`` and ``cache://redis`` alike.
"""

from __future__ import annotations

import os
import threading
import time
import uuid

import pytest
from django.conf import settings as django_settings
from django.test import override_settings

from django_tasks_q import states
from django_tasks_q.exceptions import TimeoutError
from django_tasks_q.result import AsyncResult
from django_tasks_q.results import get_store, redis_wait
from django_tasks_q.results.redis_wait import run_scripts


def new_id() -> str:
    return f"test-{uuid.uuid4().hex}"


@pytest.fixture(params=["redis", "cache"])
def store(request, redis_url):
    backend = redis_url if request.param == "redis" else "cache://redis"
    conf = {**django_settings.TASKS_Q, "RESULT_BACKEND": backend, "RESULT_EXPIRES": 600}
    with override_settings(TASKS_Q=conf):
        yield get_store()


def wait_until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)


def waiting(store, task_id: str) -> int:
    """How many waiters are registered on ``task_id``."""
    return store.client.scard(store.waiters_key(task_id))


class Waiter(threading.Thread):
    """``wait_for`` in a thread; ``meta`` or ``error`` once it returns."""

    def __init__(self, store, task_id: str, **kwargs) -> None:
        super().__init__(daemon=True)
        self.store, self.task_id, self.kwargs = store, task_id, kwargs
        self.meta = self.error = None

    def run(self) -> None:
        try:
            self.meta = self.store.wait_for(self.task_id, **{"timeout": 10, **self.kwargs})
        except BaseException as exc:  # reported by the test
            self.error = exc


def test_a_stored_result_is_returned_without_registering(store) -> None:
    task_id = new_id()
    store.mark_as_done(task_id, {"n": 1})

    meta = store.wait_for(task_id, timeout=5)

    assert (meta["status"], meta["result"]) == (states.SUCCESS, {"n": 1})
    assert not store.client.exists(store.waiters_key(task_id))


def test_the_pushed_meta_is_the_whole_stored_meta(store) -> None:
    task_id = new_id()
    waiter = Waiter(store, task_id)
    waiter.start()
    wait_until(lambda: waiting(store, task_id) == 1)
    store.mark_as_started(task_id, request=None)

    store.mark_as_done(task_id, [1, 2])
    waiter.join(10)

    assert waiter.error is None
    assert waiter.meta == store.get_task_meta(task_id)
    assert waiter.meta["date_done"] is not None
    assert not store.client.exists(store.waiters_key(task_id))


def test_every_waiter_on_a_task_wakes(store) -> None:
    task_id = new_id()
    waiters = [Waiter(store, task_id) for _ in range(3)]
    for waiter in waiters:
        waiter.start()
    wait_until(lambda: waiting(store, task_id) == 3)

    store.mark_as_done(task_id, "all")
    for waiter in waiters:
        waiter.join(10)

    assert [w.meta["result"] for w in waiters] == ["all"] * 3
    assert not store.client.exists(store.waiters_key(task_id))


def test_threads_each_get_their_own_result(store) -> None:
    ids = [new_id() for _ in range(8)]
    waiters = [Waiter(store, task_id) for task_id in ids]
    for waiter in waiters:
        waiter.start()
    wait_until(lambda: all(waiting(store, task_id) for task_id in ids))

    for n, task_id in reversed(list(enumerate(ids))):
        store.mark_as_done(task_id, n)
    for waiter in waiters:
        waiter.join(10)

    assert [w.meta["result"] for w in waiters] == list(range(8))


def test_on_message_sees_every_state_in_order(store) -> None:
    task_id = new_id()
    seen: list[tuple[str, object]] = []
    waiter = Waiter(store, task_id, on_message=lambda m: seen.append((m["status"], m["result"])))
    waiter.start()
    wait_until(lambda: waiting(store, task_id) == 1)

    store.update_state(task_id, "PROGRESS", {"done": 1})
    store.update_state(task_id, "PROGRESS", {"done": 2})
    store.mark_as_done(task_id, "end")
    waiter.join(10)

    assert waiter.error is None
    assert seen == [
        (states.PENDING, None),
        ("PROGRESS", {"done": 1}),
        ("PROGRESS", {"done": 2}),
        (states.SUCCESS, "end"),
    ]


def test_a_non_ready_state_does_not_wake_a_plain_get(store, monkeypatch) -> None:
    task_id = new_id()
    calls = []
    original = redis_wait.pairs_to_hash
    monkeypatch.setattr(redis_wait, "pairs_to_hash", lambda p: calls.append(1) or original(p))
    waiter = Waiter(store, task_id)
    waiter.start()
    wait_until(lambda: waiting(store, task_id) == 1)

    store.mark_as_started(task_id)
    store.update_state(task_id, "PROGRESS", {"p": 1})
    store.mark_as_done(task_id, 3)
    waiter.join(10)

    assert waiter.meta["result"] == 3
    assert len(calls) == 1  # only the ready state was pushed to it


def test_a_timed_out_wait_leaves_the_connection_usable(store) -> None:
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        store.wait_for(new_id(), timeout=0.2)
    assert 0.2 <= time.monotonic() - started < 1.5

    task_id = new_id()
    store.mark_as_done(task_id, "after")
    assert AsyncResult(task_id, backend=store).get(timeout=5) == "after"
    assert store.get_task_meta(task_id)["result"] == "after"


def test_a_timeout_names_the_state_the_task_is_in(store) -> None:
    task_id = new_id()
    store.mark_as_started(task_id)

    with pytest.raises(TimeoutError, match=r"\(state STARTED\)"):
        store.wait_for(task_id, timeout=0.2)


def test_a_lost_push_is_caught_by_the_recheck(store, monkeypatch) -> None:
    monkeypatch.setattr(redis_wait, "RECHECK", 0.2)
    task_id = new_id()
    waiter = Waiter(store, task_id)
    waiter.start()
    wait_until(lambda: waiting(store, task_id) == 1)

    store.client.delete(store.waiters_key(task_id))  # as if the registration were lost
    store.mark_as_done(task_id, "late")
    waiter.join(10)

    assert waiter.error is None and waiter.meta["result"] == "late"


def test_a_wait_survives_its_connection_being_killed(store, redis_url) -> None:
    task_id = new_id()
    waiter = Waiter(store, task_id)
    waiter.start()
    wait_until(lambda: waiting(store, task_id) == 1)
    [entry] = store.client.smembers(store.waiters_key(task_id))
    inbox = entry[1:]
    db = store.client.connection_pool.connection_kwargs.get("db", 0)
    blocked = []

    def find_blocked() -> bool:
        blocked[:] = [
            c["id"]
            for c in store.client.client_list()
            if c.get("cmd") == "blpop" and int(c.get("db", -1)) == int(db)
        ]
        return bool(blocked)

    wait_until(find_blocked)
    for client_id in blocked:
        store.client.client_kill_filter(_id=client_id)

    store.mark_as_done(task_id, "reconnected")
    waiter.join(10)

    assert waiter.error is None and waiter.meta["result"] == "reconnected"
    # Registering again found the result the write had pushed: nothing is left over.
    assert not store.client.exists(inbox)


def test_a_forked_child_waits_on_its_own_connection(store) -> None:
    store.get_task_meta(new_id())  # the parent's client and pool exist
    task_id = new_id()
    pid = os.fork()
    if pid == 0:  # the child: exit code 0 only if it saw the result
        code = 1
        try:
            code = 0 if store.wait_for(task_id, timeout=10)["result"] == "forked" else 2
        finally:
            os._exit(code)
    try:
        wait_until(lambda: waiting(store, task_id) == 1)
        store.mark_as_done(task_id, "forked")
        _, status = os.waitpid(pid, 0)
    except BaseException:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        raise
    assert os.waitstatus_to_exitcode(status) == 0
    assert store.get_task_meta(task_id)["result"] == "forked"


def test_scripts_are_loaded_when_redis_does_not_know_them(store) -> None:
    key = f"test-script-{uuid.uuid4().hex}"
    source = f"-- {uuid.uuid4().hex}\nredis.call('SET', KEYS[1], ARGV[1], 'EX', 60) return 1"

    run_scripts(store.client, source, 1, [(key, "one")])
    run_scripts(store.client, source, 1, [(key, "two"), (key, "three")])

    assert store.client.get(key) == b"three"
