"""AsyncResult, EagerResult, GroupResult and ResultSet against an in-memory store."""

from __future__ import annotations

import json
import pickle
import sys
import threading
import time
import types
from contextlib import contextmanager

import pytest

import django_tasks_q
from django_tasks_q import _state, states
from django_tasks_q.exceptions import RuntimeWarningError, TaskRevokedError, TimeoutError
from django_tasks_q.result import (
    AsyncResult,
    EagerResult,
    GroupResult,
    ResultSet,
    result_from_tuple,
)
from django_tasks_q.results.memory import MemoryStore


class CountingStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.reads = 0
        self.many_reads = 0

    def get_task_meta(self, task_id):
        self.reads += 1
        return super().get_task_meta(task_id)

    def get_many_meta(self, task_ids):
        self.many_reads += 1
        return {tid: MemoryStore.get_task_meta(self, tid) for tid in task_ids}


@pytest.fixture
def store() -> CountingStore:
    return CountingStore()


@contextmanager
def inside_task():
    token = _state.current_request.set(types.SimpleNamespace(id="outer", is_eager=False))
    try:
        yield
    finally:
        _state.current_request.reset(token)


@pytest.fixture
def control(monkeypatch):
    calls = []
    fake = types.ModuleType("django_tasks_q.control")
    fake.revoke = lambda task_id, **kw: calls.append((task_id, kw))
    monkeypatch.setitem(sys.modules, "django_tasks_q.control", fake)
    monkeypatch.setattr(django_tasks_q, "control", fake, raising=False)
    return calls


def later(delay: float, func, *args) -> threading.Thread:
    thread = threading.Thread(target=lambda: (time.sleep(delay), func(*args)))
    thread.start()
    return thread


# -- AsyncResult ------------------------------------------------------------------------


def test_unknown_id_is_pending_and_get_times_out(store) -> None:
    r = AsyncResult("nope", backend=store)

    assert (r.state, r.status, r.result, r.ready()) == (states.PENDING, states.PENDING, None, False)
    started = time.monotonic()
    with pytest.raises(TimeoutError, match="nope"):
        r.get(timeout=0.2)
    assert 0.2 <= time.monotonic() - started < 1.0


def test_ready_result_is_cached_and_not_queried_again(store) -> None:
    store.store_result("t", {"v": 1}, states.SUCCESS)
    r = AsyncResult("t", backend=store)

    assert r.get() == {"v": 1}
    reads = store.reads
    assert (r.state, r.result, r.successful(), r.failed()) == (
        states.SUCCESS,
        {"v": 1},
        True,
        False,
    )
    assert store.reads == reads


def test_unready_result_is_read_afresh(store) -> None:
    r = AsyncResult("t", backend=store)
    assert r.state == states.PENDING

    store.mark_as_started("t")

    assert r.state == states.STARTED


def test_get_reraises_the_stored_exception_with_the_remote_traceback(store) -> None:
    store.mark_as_failure("t", KeyError("k"), traceback="Traceback (most recent call last): ...")
    r = AsyncResult("t", backend=store)

    with pytest.raises(KeyError) as info:
        r.get()
    assert any("Remote traceback of task t" in note for note in info.value.__notes__)
    assert isinstance(r.get(propagate=False), KeyError)
    assert r.failed() and r.traceback.startswith("Traceback")


def test_revoked_task_raises_task_revoked_error(store) -> None:
    store.mark_as_revoked("t", reason="user asked")

    with pytest.raises(TaskRevokedError, match="user asked"):
        AsyncResult("t", backend=store).get()


def test_custom_state_info_and_on_message_stream(store) -> None:
    store.update_state("t", "PROGRESS", {"current": 1, "total": 2})
    r = AsyncResult("t", backend=store)
    assert (r.state, r.info) == ("PROGRESS", {"current": 1, "total": 2})
    seen: list[tuple[str, object]] = []
    first = threading.Event()

    def on_message(meta):
        seen.append((meta["status"], meta["result"]))
        first.set()

    thread = threading.Thread(target=lambda: (first.wait(5), store.mark_as_done("t", "finished")))
    thread.start()
    assert r.get(timeout=5, on_message=on_message) == "finished"
    thread.join()

    assert seen == [("PROGRESS", {"current": 1, "total": 2}), (states.SUCCESS, "finished")]


def test_failed_parent_propagates_while_child_is_pending(store) -> None:
    store.mark_as_failure("parent", ValueError("parent broke"))
    child = AsyncResult("child", backend=store, parent=AsyncResult("parent", backend=store))

    started = time.monotonic()
    with pytest.raises(ValueError, match="parent broke"):
        child.get(timeout=5)
    assert time.monotonic() - started < 1.0
    with pytest.raises(TimeoutError):
        child.get(timeout=0.1, follow_parents=False)


def test_parent_failing_during_the_wait_is_noticed(store) -> None:
    root = AsyncResult("root", backend=store)
    middle = AsyncResult("middle", backend=store, parent=root)
    leaf = AsyncResult("leaf", backend=store, parent=middle)
    store.mark_as_done("root", 1)
    thread = later(0.2, store.mark_as_failure, "middle", ZeroDivisionError("middle"))

    started = time.monotonic()
    with pytest.raises(ZeroDivisionError):
        leaf.get(timeout=10)
    thread.join()
    assert time.monotonic() - started < 2.0


def test_get_inside_a_task_is_refused_unless_explicitly_allowed(store) -> None:
    store.mark_as_done("t", 5)
    r = AsyncResult("t", backend=store)

    with inside_task():
        with pytest.raises(RuntimeWarningError, match="disable_sync_subtasks=False"):
            r.get()
        with pytest.raises(RuntimeWarningError):
            GroupResult("g", [r], backend=store).get()
        assert r.get(disable_sync_subtasks=False) == 5
        assert EagerResult("e", 1, states.SUCCESS).get() == 1


def test_eager_context_is_not_a_task_context(store) -> None:
    store.mark_as_done("t", 5)
    token = _state.current_request.set(types.SimpleNamespace(id="x", is_eager=True))
    try:
        assert AsyncResult("t", backend=store).get() == 5
    finally:
        _state.current_request.reset(token)


def test_revoke_asks_control_and_can_wait(store, control) -> None:
    r = AsyncResult("t", backend=store)
    r.revoke(terminate=True, signal="SIGKILL")
    assert control == [("t", {"terminate": True, "signal": "SIGKILL"})]

    thread = later(0.1, store.mark_as_revoked, "t")
    r.revoke(wait=True, timeout=5)
    thread.join()
    assert r.state == states.REVOKED


def test_forget_deletes_the_result_and_its_parents(store) -> None:
    store.mark_as_done("p", 1)
    store.mark_as_done("c", 2)
    r = AsyncResult("c", backend=store, parent=AsyncResult("p", backend=store))
    assert r.get() == 2

    r.forget()

    assert r.state == states.PENDING
    assert AsyncResult("p", backend=store).state == states.PENDING


def test_extended_fields_and_children(store) -> None:
    request = types.SimpleNamespace(
        task="demo.add",
        args=[1, 2],
        kwargs={"z": 3},
        retries=2,
        hostname="w@h",
        delivery_info={"routing_key": "images"},
        children=[AsyncResult("c1"), "c2", GroupResult("g", [AsyncResult("c3")])],
    )
    store.mark_as_done("t", 3, request=request)
    r = AsyncResult("t", backend=store)

    assert (r.name, r.args, r.kwargs, r.retries, r.worker, r.queue) == (
        "demo.add",
        [1, 2],
        {"z": 3},
        2,
        "w@h",
        "images",
    )
    assert r.date_done is not None
    children = r.children
    assert [c.id for c in children] == ["c1", "c2", "g"]
    assert isinstance(children[2], GroupResult) and children[2].results == ["c3"]


def test_identity_and_serialisation() -> None:
    a = AsyncResult("x", parent=AsyncResult("p"))

    assert a == AsyncResult("x") == "x"
    assert a != AsyncResult("y")
    assert len({a, AsyncResult("x")}) == 1
    assert (repr(a), str(a), a.task_id) == ("<AsyncResult: x>", "x", "x")
    restored = pickle.loads(pickle.dumps(a))
    assert restored == a and restored.parent == "p"


def test_tuple_round_trip_through_json() -> None:
    group = GroupResult(
        "g", [AsyncResult("a"), AsyncResult("b", parent=AsyncResult("a"))], parent=AsyncResult("p")
    )
    single = AsyncResult("c", parent=AsyncResult("b", parent=AsyncResult("a")))

    for original in (group, single):
        rebuilt = result_from_tuple(json.loads(json.dumps(original.as_tuple())))
        assert type(rebuilt) is type(original)
        assert json.dumps(rebuilt.as_tuple()) == json.dumps(original.as_tuple())
    assert result_from_tuple("plain-id") == AsyncResult("plain-id")


# -- EagerResult ------------------------------------------------------------------------


def test_eager_success() -> None:
    r = EagerResult("e", {"ok": True}, states.SUCCESS, name="demo.t", args=[1], kwargs={})

    assert r.get() == {"ok": True} and r.result == {"ok": True}
    assert r.ready() and r.successful() and not r.failed()
    assert (r.name, r.args, r.kwargs, r.state) == ("demo.t", [1], {}, states.SUCCESS)
    assert r.date_done is not None


def test_eager_failure_raises_or_returns() -> None:
    exc = ValueError("eager boom")
    r = EagerResult("e", exc, states.FAILURE, traceback="tb")

    with pytest.raises(ValueError, match="eager boom"):
        r.get()
    assert r.get(propagate=False) is exc
    assert r.failed() and r.ready() and r.traceback == "tb" and r.result is exc


def test_eager_revoke() -> None:
    r = EagerResult("e", None, states.PENDING)
    assert not r.ready()

    r.revoke()

    assert r.state == states.REVOKED
    with pytest.raises(TaskRevokedError):
        r.get()


def test_eager_result_pickles() -> None:
    r = pickle.loads(pickle.dumps(EagerResult("e", 4, states.SUCCESS, name="n")))
    assert (r.id, r.get(), r.name) == ("e", 4, "n")


# -- GroupResult ------------------------------------------------------------------------


def group_of(store, *ids: str) -> GroupResult:
    return GroupResult("g", [AsyncResult(i, backend=store) for i in ids], backend=store)


def test_group_get_keeps_order(store) -> None:
    g = group_of(store, "a", "b", "c")
    for task_id, value in (("c", 3), ("a", 1)):
        store.mark_as_done(task_id, value)
    thread = later(0.1, store.mark_as_done, "b", 2)

    assert g.get(timeout=5) == [1, 2, 3]
    thread.join()
    assert g.join(timeout=1) == [1, 2, 3]


def test_group_state_queries_use_one_round_trip(store) -> None:
    g = group_of(store, "a", "b", "c", "d")
    store.mark_as_done("a", 1)
    store.mark_as_done("b", 2)
    store.mark_as_failure("c", ValueError("c"))
    store.reads = store.many_reads = 0

    assert not g.ready() and g.waiting()
    assert g.failed() and not g.successful()
    assert g.completed_count() == 2
    # five questions, five round trips: never one per member
    assert store.reads == 0 and store.many_reads == 5


def test_group_get_propagates_and_can_collect_exceptions(store) -> None:
    g = group_of(store, "a", "b")
    store.mark_as_done("a", 1)
    store.mark_as_failure("b", ValueError("b"))

    with pytest.raises(ValueError):
        g.get()
    values = g.get(propagate=False)
    assert values[0] == 1 and isinstance(values[1], ValueError)


def test_group_timeout_covers_the_whole_join(store) -> None:
    g = group_of(store, "a", "b")

    started = time.monotonic()
    with pytest.raises(TimeoutError):
        g.get(timeout=0.3)
    assert time.monotonic() - started < 1.0


def test_group_save_restore_delete_forget(store) -> None:
    g = group_of(store, "a", "b").save()
    store.mark_as_done("a", 1)

    restored = GroupResult.restore("g", backend=store)
    assert restored == g and [r.id for r in restored] == ["a", "b"]
    assert len(restored) == 2 and restored[0] == "a" and restored.children == restored.results

    restored.forget()
    assert GroupResult.restore("g", backend=store) is None
    assert AsyncResult("a", backend=store).state == states.PENDING
    assert GroupResult.restore("never", backend=store) is None


def test_nested_groups(store) -> None:
    inner = group_of(store, "x", "y")
    outer = GroupResult("outer", [AsyncResult("a", backend=store), inner], backend=store)
    store.mark_as_done("a", 1)
    store.mark_as_done("x", 2)
    assert not outer.ready()

    store.mark_as_done("y", 3)

    assert outer.ready() and outer.successful() and outer.completed_count() == 2
    assert outer.get() == [1, [2, 3]]


def test_group_revoke_revokes_every_member(store, control) -> None:
    group_of(store, "a", "b").revoke(terminate=True)

    assert [c[0] for c in control] == ["a", "b"]


def test_result_set_without_id() -> None:
    rs = ResultSet([EagerResult("a", 1, states.SUCCESS), EagerResult("b", 2, states.SUCCESS)])

    assert rs.get() == [1, 2] and rs.ready() and rs.completed_count() == 2
    assert list(rs) == ["a", "b"]
