"""Workflows on real ``runworker`` processes: scale, concurrency, failures and crashes.

Run on ``django://`` (SQLite by default, PostgreSQL with ``TQ_DATABASE=postgres``)
and on Redis (``redis://127.0.0.1:6379/7``). Body executions are counted in a file
each execution appends to, so a double or missing body shows across processes.
"""

from __future__ import annotations

import time

import pytest

from django_tasks_q import GroupResult, chain, chord, group
from django_tasks_q.exceptions import ChordError
from django_tasks_q.results import get_store
from testproject.demo.tasks import add, mul, xsum
from tests.integration.canvas_app.harness import (
    broker,  # noqa: F401  (fixture)
    new_queue,
    publishing_to,
    read_lines,
    running_worker,
)
from tests.integration.canvas_app.tasks import boom, errback, record_body, slow_add, wait_inside
from tests.integration.workerproc import wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(600)]


def test_chord_of_a_thousand_members_fires_its_body_once(broker, tmp_path):  # noqa: F811
    path = str(tmp_path / "bodies.jsonl")
    with running_worker(broker, concurrency=8):
        started = time.monotonic()
        res = chord((add.s(i, i) for i in range(1000)), record_body.s(path))()
        assert res.get(timeout=240) == sum(2 * i for i in range(1000))
        elapsed = time.monotonic() - started
        time.sleep(0.5)  # a second body, if any, would have run by now
    assert [line["n"] for line in read_lines(tmp_path / "bodies.jsonl")] == [1000]
    print(f"chord of 1000 on {broker.split(':')[0]}: {elapsed:.2f}s")


def test_fifty_chords_at_once_each_fire_once(broker, tmp_path):  # noqa: F811
    with running_worker(broker, concurrency=8):
        results = [
            chord((add.s(i, c) for i in range(10)), record_body.s(str(tmp_path / f"c{c}.jsonl")))()
            for c in range(50)
        ]
        for c, res in enumerate(results):
            assert res.get(timeout=240) == sum(range(10)) + 10 * c
        time.sleep(0.5)
    for c in range(50):
        assert len(read_lines(tmp_path / f"c{c}.jsonl")) == 1, f"chord {c}"


def test_chord_with_a_failing_member(broker, tmp_path):  # noqa: F811
    bodies, errors = tmp_path / "bodies.jsonl", tmp_path / "errors.jsonl"
    with running_worker(broker):
        body = record_body.s(str(bodies))
        body.link_error(errback.s(str(errors)))
        header = [add.s(1, 1), boom.s("member failed"), add.s(2, 2)]
        res = chord(header, body)()
        with pytest.raises(ChordError) as info:
            res.get(timeout=60)
        assert "KeyError('member failed')" in str(info.value)
        wait_until(lambda: read_lines(errors), 30, "the body's errback")
    assert read_lines(bodies) == []
    [call] = read_lines(errors)
    assert call["errback"] == res.id and call["exc"] == "ChordError"


def test_worker_killed_mid_chord_restarts_and_the_body_fires_once(broker, tmp_path):  # noqa: F811
    # Given a chord of slow acks_late members, half done when the worker is SIGKILLed
    bodies, members = tmp_path / "bodies.jsonl", tmp_path / "members.jsonl"
    queue = new_queue()
    with running_worker(broker, concurrency=4, queue=queue) as worker:
        header = [slow_add.s(i, 0, 0.2, str(members)) for i in range(40)]
        res = chord(header, record_body.s(str(bodies)))()
        wait_until(lambda: len(read_lines(members)) >= 12, 60, "a third of the members")
        worker.kill_group()
    assert res.state == "PENDING" and read_lines(bodies) == []
    # When a new worker takes over (redelivering the killed worker's messages)
    with running_worker(broker, concurrency=4, queue=queue):
        assert res.get(timeout=120) == sum(range(40))
        time.sleep(1.0)
    # Then every member ran (some twice, redelivered) and the body ran exactly once
    assert {m["member"] for m in read_lines(members)} == set(range(40))
    assert len(read_lines(bodies)) == 1


def test_thousand_link_chain_on_a_worker(broker):  # noqa: F811
    with running_worker(broker, concurrency=2):
        started = time.monotonic()
        res = chain([add.s(0, 1)] + [add.s(1) for _ in range(999)])()
        assert res.get(timeout=300) == 1000
        print(f"1000-link chain on {broker.split(':')[0]}: {time.monotonic() - started:.2f}s")
        assert res.parent.get(timeout=5) == 999


def test_nesting_and_lineage_on_a_worker(broker):  # noqa: F811
    with running_worker(broker):
        res = (add.s(1, 1) | group(mul.s(2), mul.s(3)) | xsum.s() | mul.s(10))()
        assert res.get(timeout=60) == 100
        header = [group(add.s(1, 1), add.s(2, 2)) | xsum.s(), add.s(3, 3) | mul.s(2)]
        assert chord(header, xsum.s() | mul.s(2))().get(timeout=60) == 36  # (6 + 12) * 2
        first = res.parent
        while first.parent is not None:
            first = first.parent
        store = get_store()
        assert store.get_task_meta(res.id)["root_id"] == first.id
        assert store.get_task_meta(res.id)["parent_id"] is not None


def test_group_result_saved_and_restored(broker):  # noqa: F811
    with running_worker(broker):
        res = group(add.s(i, i) for i in range(5))()
        res.save()
        restored = GroupResult.restore(res.id)
        assert restored.get(timeout=60) == [0, 2, 4, 6, 8]
        assert restored.ready() and restored.successful() and restored.completed_count() == 5


def test_get_inside_a_task_is_refused_unless_allowed(broker):  # noqa: F811
    with running_worker(broker, concurrency=4):
        refused = wait_inside.delay().get(timeout=60)
        assert refused.startswith("refused: Never call result.get() inside a task")
        assert wait_inside.delay(allow=True).get(timeout=60) == 2


def test_revoked_member_fails_the_chord_instead_of_hanging(broker, tmp_path):  # noqa: F811
    from django_tasks_q.revocation import revoke

    # Given a chord whose second member is revoked before any worker runs
    bodies, queue = tmp_path / "bodies.jsonl", new_queue()
    with publishing_to(broker, queue):
        res = chord([add.s(1, 1), add.s(2, 2)], record_body.s(str(bodies)))()
        revoke(res.parent.results[1].id)
    # When a worker starts
    with running_worker(broker, queue=queue):
        # Then the chord fails naming the revoked member, and the body never runs
        with pytest.raises(ChordError, match="TaskRevokedError"):
            res.get(timeout=60)
    assert read_lines(bodies) == []
