"""The contract every result store keeps, run by ``test_result_stores.py`` on each store."""

from __future__ import annotations

import datetime
import decimal
import threading
import time
import types
import uuid
from collections.abc import Callable
from contextlib import contextmanager

import pytest
from django.conf import settings as django_settings
from django.db import connections
from django.test import override_settings
from django.utils import timezone

from django_tasks_q import _state, states
from django_tasks_q.exceptions import RemoteError, RuntimeWarningError, TimeoutError
from django_tasks_q.result import AsyncResult, GroupResult
from django_tasks_q.results import StoreItem

EXPIRES = 600


class StoreTestError(Exception):
    """A custom exception importable from this (loaded) test module."""


def tasks_q(**overrides):
    return override_settings(TASKS_Q={**django_settings.TASKS_Q, **overrides})


def new_id() -> str:
    return f"test-{uuid.uuid4().hex}"


def request(**attrs) -> types.SimpleNamespace:
    base = {
        "task": "demo.add",
        "args": [2, 3],
        "kwargs": {"when": datetime.date(2024, 1, 2)},
        "hostname": "worker@host",
        "retries": 1,
        "delivery_info": {"routing_key": "default"},
        "parent_id": "parent-1",
        "root_id": "root-1",
    }
    return types.SimpleNamespace(**{**base, **attrs})


def run_threads(count: int, target: Callable[[int], object]) -> list[object]:
    """Run ``target(i)`` in ``count`` threads started together; return their results."""
    barrier = threading.Barrier(count)
    results: list[object] = [None] * count
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            barrier.wait(timeout=10)
            results[i] = target(i)
        except BaseException as exc:  # surfaced below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    return results


@contextmanager
def inside_task():
    token = _state.current_request.set(types.SimpleNamespace(id="outer", is_eager=False))
    try:
        yield
    finally:
        _state.current_request.reset(token)


class StoreContract:
    """Behaviour every result store must have. Subclasses provide the ``store`` fixture."""

    #: wait_for wakes on a notification (not the poll interval) on this store
    native_wait = True

    def result(self, store, task_id: str) -> AsyncResult:
        return AsyncResult(task_id, backend=store)

    # -- states ------------------------------------------------------------------------

    def test_unknown_id_is_pending(self, store) -> None:
        meta = store.get_task_meta(new_id())

        assert meta["status"] == states.PENDING and meta["result"] is None
        assert meta["children"] == [] and meta["date_done"] is None

    def test_every_state_round_trips(self, store) -> None:
        req = request()
        cases = {
            states.STARTED: lambda i: store.mark_as_started(i, request=req),
            states.RETRY: lambda i: store.mark_as_retry(i, ValueError("again"), "tb", req),
            "PROGRESS": lambda i: store.update_state(i, "PROGRESS", {"done": 3}, request=req),
            states.SUCCESS: lambda i: store.mark_as_done(i, {"sum": 5}, request=req),
            states.FAILURE: lambda i: store.mark_as_failure(i, KeyError("k"), "tb", req),
            states.REVOKED: lambda i: store.mark_as_revoked(i, "by test", request=req),
            states.RECEIVED: lambda i: store.store_result(i, None, states.RECEIVED, request=req),
        }
        for state, write in cases.items():
            task_id = new_id()
            write(task_id)
            r = self.result(store, task_id)
            assert r.state == state, state
            assert (r.name, r.args, r.kwargs) == (
                "demo.add",
                [2, 3],
                {"when": datetime.date(2024, 1, 2)},
            )
            assert (r.worker, r.retries, r.queue) == ("worker@host", 1, "default")
            meta = store.get_task_meta(task_id)
            assert (meta["parent_id"], meta["root_id"]) == ("parent-1", "root-1")
            assert (meta["date_done"] is not None) == (state in states.READY_STATES), state
            if state == states.STARTED:
                assert meta["date_started"] is not None and r.info["hostname"] == "worker@host"
            if state in (states.RETRY, states.FAILURE):
                assert r.traceback == "tb"
        assert self.result(store, new_id()).state == states.PENDING

    def test_values_round_trip_with_their_types(self, store) -> None:
        task_id = new_id()
        value = {
            "when": timezone.now(),
            "price": decimal.Decimal("9.99"),
            "id": uuid.UUID(int=1),
            "nested": [1, "two", None, True],
        }

        store.mark_as_done(task_id, value, request=request())

        assert self.result(store, task_id).get(timeout=5) == value

    def test_unserialisable_result_stores_a_failure(self, store) -> None:
        task_id = new_id()

        store.mark_as_done(task_id, object(), request=request())

        r = self.result(store, task_id)
        assert r.state == states.FAILURE
        with pytest.raises(Exception, match=r"demo\.add\[.*cannot be serialised"):
            r.get(timeout=5)

    # -- exceptions --------------------------------------------------------------------

    def test_exceptions_are_rebuilt_by_type(self, store) -> None:
        builtin, custom, foreign = new_id(), new_id(), new_id()
        store.mark_as_failure(builtin, ZeroDivisionError("zero"))
        store.mark_as_failure(custom, StoreTestError("mine", 7))
        store.store_result(
            foreign,
            {"exc_type": "VendorError", "exc_module": "vendor_sdk.errors", "exc_message": ["x"]},
            states.FAILURE,
        )

        with pytest.raises(ZeroDivisionError, match="zero"):
            self.result(store, builtin).get(timeout=5)
        with pytest.raises(StoreTestError) as info:
            self.result(store, custom).get(timeout=5)
        assert info.value.args == ("mine", 7)
        with pytest.raises(RemoteError) as remote:
            self.result(store, foreign).get(timeout=5)
        assert (remote.value.exc_type, remote.value.exc_module) == (
            "VendorError",
            "vendor_sdk.errors",
        )
        assert isinstance(self.result(store, builtin).get(propagate=False), ZeroDivisionError)

    # -- waiting -----------------------------------------------------------------------

    def test_get_times_out_on_a_pending_task(self, store) -> None:
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            self.result(store, new_id()).get(timeout=0.2)
        assert 0.2 <= time.monotonic() - started < 1.0

    def test_wait_for_wakes_promptly_when_the_result_lands(self, store) -> None:
        task_id = new_id()
        waiting = threading.Event()
        written: list[float] = []
        interval = 5.0 if self.native_wait else 0.5

        def writer() -> None:
            try:
                assert waiting.wait(10)
                # Let the waiter settle into its wait (a polling store's backoff grows).
                time.sleep(0.7)
                store.mark_as_done(task_id, "landed")
                written.append(time.monotonic())
            finally:
                connections.close_all()

        thread = threading.Thread(target=writer)
        thread.start()
        meta = store.wait_for(
            task_id, timeout=10, interval=interval, on_message=lambda m: waiting.set()
        )
        woke = time.monotonic()
        thread.join()

        assert meta["status"] == states.SUCCESS and meta["result"] == "landed"
        latency = woke - written[0]
        assert latency < (0.15 if self.native_wait else interval + 0.25), latency

    def test_get_inside_a_task_is_refused(self, store) -> None:
        task_id = new_id()
        store.mark_as_done(task_id, 1)

        with inside_task():
            with pytest.raises(RuntimeWarningError):
                self.result(store, task_id).get(timeout=1)
            assert self.result(store, task_id).get(timeout=1, disable_sync_subtasks=False) == 1

    # -- write rules -------------------------------------------------------------------

    def test_a_late_write_never_downgrades_a_ready_state(self, store) -> None:
        task_id = new_id()
        store.mark_as_done(task_id, 42, request=request())

        store.mark_as_started(task_id, request=request(hostname="late"))
        store.update_state(task_id, "PROGRESS", {"p": 1})
        store.store_many([StoreItem(task_id, None, states.RETRY)])

        meta = store.get_task_meta(task_id)
        assert (meta["status"], meta["result"], meta["worker"]) == (
            states.SUCCESS,
            42,
            "worker@host",
        )

    def test_racing_writes_end_in_the_ready_state(self, store) -> None:
        task_id = new_id()

        def write(i: int) -> None:
            if i == 7:
                store.mark_as_done(task_id, "final", request=request())
            else:
                store.mark_as_started(task_id, request=request())

        run_threads(20, write)

        meta = store.get_task_meta(task_id)
        assert (meta["status"], meta["result"]) == (states.SUCCESS, "final")

    def test_revoke_without_a_request_keeps_what_is_known(self, store) -> None:
        task_id = new_id()
        store.mark_as_started(task_id, request=request(periodic_task_name="nightly"))

        store.mark_as_revoked(task_id)

        meta = store.get_task_meta(task_id)
        assert meta["status"] == states.REVOKED
        assert (meta["name"], meta["periodic_task_name"]) == ("demo.add", "nightly")

    def test_a_batch_keeps_what_each_row_knows_when_only_others_carry_a_field(self, store) -> None:
        known, fresh = new_id(), new_id()
        store.mark_as_started(known, request=request(periodic_task_name="nightly"))

        store.store_many(
            [
                StoreItem(known, 1, states.SUCCESS),  # no request: nothing to coalesce
                StoreItem(fresh, 2, states.SUCCESS, request=request(periodic_task_name="hourly")),
            ]
        )

        metas = store.get_many_meta([known, fresh])
        assert (metas[known]["status"], metas[known]["result"]) == (states.SUCCESS, 1)
        assert (metas[known]["name"], metas[known]["periodic_task_name"]) == ("demo.add", "nightly")
        assert metas[known]["date_started"] is not None
        assert (metas[fresh]["name"], metas[fresh]["periodic_task_name"]) == ("demo.add", "hourly")
        assert metas[fresh]["date_started"] is None

    def test_store_many_writes_every_item(self, store) -> None:
        ids = [new_id() for _ in range(200)]
        items = [StoreItem(i, n, states.SUCCESS, request=request()) for n, i in enumerate(ids)]

        store.store_many(items)

        metas = store.get_many_meta(ids + ["unknown-" + new_id()])
        assert [metas[i]["result"] for i in ids] == list(range(200))
        assert all(metas[i]["status"] == states.SUCCESS for i in ids)
        assert list(metas.values())[-1]["status"] == states.PENDING

    def test_children_are_stored_as_results(self, store) -> None:
        task_id = new_id()
        children = [AsyncResult("c1"), "c2", GroupResult("g", [AsyncResult("c3")])]

        store.mark_as_done(task_id, 1, request=request(children=children))

        assert [c.id for c in self.result(store, task_id).children] == ["c1", "c2", "g"]

    def test_forget(self, store) -> None:
        task_id = new_id()
        store.mark_as_done(task_id, 1)

        self.result(store, task_id).forget()

        assert store.get_task_meta(task_id)["status"] == states.PENDING

    # -- groups and chords -------------------------------------------------------------

    def test_group_save_restore_delete(self, store) -> None:
        group_id, ids = new_id(), [new_id(), new_id()]
        for n, i in enumerate(ids):
            store.mark_as_done(i, n)
        GroupResult(group_id, [AsyncResult(i) for i in ids], backend=store).save()

        restored = GroupResult.restore(group_id, backend=store)
        assert [r.id for r in restored] == ids
        assert restored.get(timeout=5) == [0, 1] and restored.successful()

        restored.delete()
        assert GroupResult.restore(group_id, backend=store) is None

    def test_chord_counter_fires_exactly_once_under_a_race(self, store) -> None:
        for _round in range(3):
            group_id = new_id()
            store.chord_init(group_id, 25, {"task": "demo.xsum", "args": []}, ["a", "b"])
            for _ in range(5):
                assert store.chord_part_done(group_id) is None

            fired = [
                r for r in run_threads(20, lambda i, g=group_id: store.chord_part_done(g)) if r
            ]

            assert len(fired) == 1
            assert fired[0].group_id == group_id
            assert fired[0].body == {"task": "demo.xsum", "args": []}
            assert fired[0].result_ids == ["a", "b"]
            assert store.chord_part_done(group_id) is None
