"""Workflows as a worker runs them: every message is encoded, decoded and traced.

A stub publisher collects the encoded messages and a stub worker runs them through
the real tracer (``execution.execute``) against an in-memory result store, in
shuffled order, so chords see their members finish in any order. Real brokers and
real worker processes are in ``tests/integration/test_canvas*.py``.
"""

from __future__ import annotations

import json
import random
from collections import deque

import pytest
from django.test import override_settings

from django_tasks_q import chain, chord, group, states, task
from django_tasks_q.exceptions import ChordError
from django_tasks_q.execution import execute
from django_tasks_q.message import Message
from django_tasks_q.registry import tasks
from django_tasks_q.request import Request
from django_tasks_q.results.memory import MemoryStore
from testproject.demo.tasks import add, fail, mul, xsum

calls: list = []


@task
def collect(values):
    calls.append(values)
    return values


@task
def errback_new(request, exc, traceback):
    calls.append(("new", request.id, str(exc)))


@task
def errback_old(task_id):
    calls.append(("old", task_id))


class StubWorker:
    """Publisher and worker in one: ``run()`` executes what was published."""

    def __init__(self, store: MemoryStore, seed: int = 0) -> None:
        self.store = store
        self.queue: deque = deque()
        self.sent: list[Message] = []
        self.random = random.Random(seed)

    def publish(self, encoded, queue, **options) -> None:
        self.queue.append(encoded)

    def decode(self, encoded) -> Message:
        return Message.decode(
            encoded.body, encoded.content_type, encoded.content_encoding,
            encoded.headers, encoded.properties, {"application/json", "json"},
        )  # fmt: skip

    def run(self, shuffle: bool = True, limit: int = 100_000) -> int:
        done = 0
        while self.queue and done < limit:
            if shuffle:
                self.queue.rotate(self.random.randrange(len(self.queue)))
            message = self.decode(self.queue.popleft())
            self.sent.append(message)
            self.execute(message)
            done += 1
        return done

    def execute(self, message: Message) -> None:
        request = Request.from_message(message, hostname="stub@host")
        execute(tasks[message.task], request, self.store)


@pytest.fixture
def worker(monkeypatch):
    import django_tasks_q.messaging.producer as producer

    store = MemoryStore()
    stub = StubWorker(store)
    monkeypatch.setattr(producer, "get_publisher", lambda: stub)
    calls.clear()
    with override_settings(TASKS_Q={"BROKER_URL": "memory://", "RESULT_BACKEND": store}):
        yield stub


# -- the seeds, through messages ----------------------------------------------------------
def test_seeds_through_messages(worker):
    g = group(add.s(i, i) for i in range(10))()
    c1 = chain(add.s(4, 4) | mul.s(8))()
    c2 = (add.s(4, 4) | mul.s(8))()
    c3 = chain(add.s(4) | mul.s(8))(4)
    d1 = chord((add.s(i, i) for i in range(10)), xsum.s())()
    d2 = (group(add.s(i, i) for i in range(10)) | xsum.s())()
    pg = group(add.s(i) for i in range(10))(10)
    worker.run()
    assert g.get(timeout=1) == [0, 2, 4, 6, 8, 10, 12, 14, 16, 18]
    assert c1.get(timeout=1) == c2.get(timeout=1) == c3.get(timeout=1) == 64
    assert d1.get(timeout=1) == d2.get(timeout=1) == 90
    assert pg.get(timeout=1) == [10, 11, 12, 13, 14, 15, 16, 17, 18, 19]


def test_chain_travels_reversed_in_the_first_message(worker):
    res = (add.s(1, 1) | mul.s(2) | mul.s(3))()
    first = worker.decode(worker.queue[0])
    assert first.task == add.name
    assert [link["task"] for link in first.chain] == [mul.name, mul.name]
    assert first.chain[0]["args"] == [3] and first.chain[1]["args"] == [2]
    assert first.chain[0]["options"]["task_id"] == res.id
    worker.run()
    assert res.get(timeout=1) == 12
    assert res.parent.get(timeout=1) == 4 and res.parent.parent.get(timeout=1) == 2


def test_lineage_root_and_parent_ids(worker):
    res = (add.s(1, 1) | mul.s(2) | mul.s(3))()
    worker.run()
    first, second = res.parent.parent, res.parent
    store = worker.store
    assert store.get_task_meta(first.id)["root_id"] == first.id
    assert store.get_task_meta(second.id)["root_id"] == first.id
    assert store.get_task_meta(second.id)["parent_id"] == first.id
    assert store.get_task_meta(res.id)["parent_id"] == second.id
    assert store.get_task_meta(res.id)["root_id"] == first.id


def test_group_members_share_the_group_id_and_root(worker):
    res = group(add.s(1, 1), add.s(2, 2))()
    worker.run()
    metas = [worker.store.get_task_meta(r.id) for r in res.results]
    assert {m["group_id"] for m in metas} == {res.id}
    assert {m["root_id"] for m in metas} == {res.results[0].id}


def test_thousand_link_chain_on_the_worker(worker):
    res = chain([add.s(0, 1)] + [add.s(1) for _ in range(999)])()
    assert worker.run(shuffle=False) == 1000
    assert res.get(timeout=5) == 1000


def test_chord_body_runs_once_with_results_in_header_order(worker):
    res = chord([add.s(i, 0) for i in range(50)], collect.s())()
    worker.run()
    assert res.get(timeout=1) == list(range(50))
    assert calls == [list(range(50))]


def test_redelivered_member_is_not_counted_twice(worker):
    # Given a chord of three whose first member is delivered twice (a crash after
    # it finished but before its ack)
    res = chord([add.s(1, 1), add.s(2, 2), add.s(3, 3)], collect.s())()
    first = worker.queue[0]
    worker.queue.append(first)
    # When the duplicate runs before the other members
    worker.execute(worker.decode(worker.queue.popleft()))
    worker.execute(worker.decode(worker.queue.pop()))
    # Then the body has not fired early, and fires exactly once in the end
    assert calls == [] and worker.store.get_task_meta(res.id)["status"] == states.PENDING
    worker.run()
    assert res.get(timeout=1) == [2, 4, 6] and calls == [[2, 4, 6]]


def test_chord_with_a_failing_member_fails_with_chord_error_and_calls_errbacks(worker):
    body = collect.s()
    body.link_error(errback_new.s())
    body.link_error(errback_old.s())
    header = [add.s(1, 1), fail.s("bad"), add.s(2, 2)]
    res = chord(header, body)()
    failing_id = worker.decode(worker.queue[1]).id
    worker.run()
    with pytest.raises(ChordError) as info:
        res.get(timeout=1)
    assert failing_id in str(info.value) and "ValueError('bad')" in str(info.value)
    assert ("new", res.id, str(info.value)) in calls
    assert ("old", res.id) in calls
    assert not any(isinstance(c, list) for c in calls)  # the body never ran


def test_empty_chord_header_calls_the_body_with_an_empty_list(worker):
    res = chord([], collect.s())()
    worker.run()
    assert res.get(timeout=1) == [] and calls == [[]]


def test_group_in_a_chain_becomes_a_chord_continued_by_the_rest(worker):
    res = (add.s(1, 1) | group(mul.s(2), mul.s(3)) | xsum.s() | mul.s(10))()
    worker.run()
    assert res.get(timeout=1) == 100
    assert res.parent.get(timeout=1) == 10


def test_chord_inside_a_chain_and_chain_inside_a_group(worker):
    c = (add.s(1, 1) | chord([mul.s(2), mul.s(3)], xsum.s()) | mul.s(10))()
    g = group(add.s(1, 1) | mul.s(10), add.s(2, 2))()
    worker.run()
    assert c.get(timeout=1) == 100 and g.get(timeout=1) == [20, 4]


def test_task_then_group_gives_each_member_the_result(worker):
    res = (add.s(2, 2) | group(mul.s(i) for i in range(3)))()
    worker.run()
    assert res.get(timeout=1) == [0, 4, 8]


def test_nested_workflows_in_a_chord_header(worker):
    header = [
        group(add.s(1, 1), add.s(2, 2)),
        chord([add.s(3, 3)], xsum.s()),
        add.s(4, 4) | mul.s(2),
        add.s(1, 1) | group(mul.s(1), mul.s(2)),
    ]
    res = chord(header, collect.s())()
    worker.run()
    assert res.get(timeout=1) == [[2, 4], 6, 16, [2, 4]]


def test_chain_failure_marks_later_links_failed(worker):
    res = (add.s(1, 1) | fail.si("mid") | mul.s(2) | mul.s(3))()
    worker.run()
    for node in (res, res.parent):
        assert worker.store.get_task_meta(node.id)["status"] == states.FAILURE
    with pytest.raises(ValueError, match="mid"):
        res.get(timeout=1)


def test_chain_in_a_chord_header_failing_midway_settles_the_chord(worker):
    res = chord([add.s(1, 1) | fail.si("mid") | mul.s(2), add.s(2, 2)], collect.s())()
    worker.run()
    with pytest.raises(ChordError, match="mid"):
        res.get(timeout=1)
    assert calls == []


def test_nested_chord_failure_reaches_the_outer_chord(worker):
    inner = chord([fail.s("deep")], xsum.s())
    res = chord([inner, add.s(1, 1)], collect.s())()
    worker.run()
    with pytest.raises(ChordError, match="deep"):
        res.get(timeout=1)


def test_link_and_link_error_callbacks(worker):
    add.s(2, 2).apply_async(link=collect.s())
    fail.s("e").apply_async(link_error=[errback_old.s(), errback_new.s()])
    failed_id = worker.decode(worker.queue[1]).id
    worker.run(shuffle=False)
    assert 4 in calls
    assert ("new", failed_id, "e") in calls  # new style: called inline, in the worker
    assert ("old", failed_id) in calls  # old style: sent as a task with the failed id


def test_map_starmap_chunks_on_the_worker(worker):
    m = xsum.map([[1, 2], [3, 4]]).delay()
    s = add.starmap([(1, 2), (3, 4)]).delay()
    c = add.chunks(zip(range(6), range(6), strict=True), 4)()
    worker.run()
    assert m.get(timeout=1) == [3, 7] and s.get(timeout=1) == [3, 7]
    assert c.get(timeout=1) == [[0, 2, 4, 6], [8, 10]]


def test_signatures_as_task_arguments(worker):
    res = collect.delay(add.s(1, 2) | mul.s(3))
    worker.run()
    value = res.get(timeout=1)
    assert value["subtask_type"] == "chain"
    assert json.loads(json.dumps(value))["kwargs"]["tasks"][0]["args"] == [1, 2]


def test_chord_apply_async_task_id_is_the_body_id(worker):
    res = chord([add.s(1, 1)], xsum.s()).apply_async(task_id="body-id")
    worker.run()
    assert res.id == "body-id" and res.get(timeout=1) == 2


def test_member_redelivered_after_its_result_was_written_is_counted(worker):
    from django_tasks_q.callbacks import on_redelivered_finished

    # Given a member whose process wrote its result and died before counting it
    res = chord([add.s(1, 1), add.s(2, 2)], collect.s())()
    first = worker.decode(worker.queue.popleft())
    request = Request.from_message(first, hostname="stub@host", delivery_count=2)
    worker.store.mark_as_done(first.id, 2, request=request)
    # When the worker sees the redelivery, skips running it, and counts it
    on_redelivered_finished(tasks[first.task], request, worker.store)
    on_redelivered_finished(tasks[first.task], request, worker.store)  # twice: still once
    worker.run()
    # Then the chord completes once, with both results
    assert res.get(timeout=1) == [2, 4] and calls == [[2, 4]]


def test_a_member_that_will_never_run_settles_its_chord_and_chain(worker):
    from django_tasks_q.callbacks import on_not_run
    from django_tasks_q.exceptions import TaskRevokedError

    res = chord([add.s(1, 1) | mul.s(2), add.s(2, 2)], collect.s())()
    first = worker.decode(worker.queue.popleft())  # add(1, 1), with mul(2) to follow
    request = Request.from_message(first, hostname="stub@host")
    on_not_run(tasks[first.task], request, TaskRevokedError("revoked"), worker.store, False)
    worker.run()
    with pytest.raises(ChordError, match="TaskRevokedError"):
        res.get(timeout=1)
    assert (
        worker.store.get_task_meta(first.chain[0]["options"]["task_id"])["status"] == states.FAILURE
    )
