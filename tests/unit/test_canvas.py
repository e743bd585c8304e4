"""Signatures and workflows: dict form, partials, ``|`` rules, nesting, eager execution."""

from __future__ import annotations

import json
import pickle

import pytest
from django.test import override_settings

from django_tasks_q import (
    EagerResult,
    GroupResult,
    Signature,
    chain,
    chord,
    chunks,
    group,
    signature,
    states,
    task,
    xmap,
    xstarmap,
)
from django_tasks_q.canvas import maybe_signature, signature_from_dict
from django_tasks_q.exceptions import ChordError
from testproject.demo.tasks import add, fail, mul, xsum

EAGER = override_settings(TASKS_Q={"ALWAYS_EAGER": True})

calls: list = []


@task
def record(*args, **kwargs):
    calls.append((args, kwargs))
    return args[0] if args else None


@task
def errback_new(request, exc, traceback):
    calls.append(("new", request.id, type(exc).__name__, str(exc)))


@task
def errback_old(task_id):
    calls.append(("old", task_id))


@task
def kw(x, y=0, debug=False):
    return {"x": x, "y": y, "debug": debug}


@pytest.fixture(autouse=True)
def _clear_calls():
    calls.clear()


def roundtrip(sig):
    return signature_from_dict(json.loads(json.dumps(sig)))


# -- signatures -------------------------------------------------------------------------
def test_signature_is_celerys_dict_form():
    sig = add.signature((2, 2), countdown=10)
    assert dict(sig) == {
        "task": "testproject.demo.tasks.add",
        "args": [2, 2],
        "kwargs": {},
        "options": {"countdown": 10},
        "subtask_type": None,
        "immutable": False,
    }
    assert repr(add.s(2, 2)) == "testproject.demo.tasks.add(2, 2)"
    assert add.si(2, 2).immutable and repr(add.si(2, 2)).endswith("!")


def test_signature_by_name_and_from_dict():
    by_name = signature("testproject.demo.tasks.add", args=(2, 2), countdown=3)
    assert by_name.task == add.name and by_name.args == [2, 2]
    assert by_name.options == {"countdown": 3}
    assert signature(dict(by_name)) == by_name
    assert maybe_signature(None) is None
    assert maybe_signature(dict(by_name)).type is add


@pytest.mark.parametrize(
    "make",
    [
        lambda: add.s(1, 2),
        lambda: add.s(4) | mul.s(8),
        lambda: group(add.s(i, i) for i in range(3)),
        lambda: chord([add.s(1, 1), add.s(2, 2)], xsum.s()),
        lambda: add.s(1, 1) | group(mul.s(2), mul.s(3)) | xsum.s(),
        lambda: add.map([1, 2]),
        lambda: add.starmap([(1, 2)]),
        lambda: add.chunks([(1, 2), (3, 4)], 1),
    ],
)
def test_every_signature_survives_json_and_pickle(make):
    sig = make()
    back = roundtrip(sig)
    assert type(back) is type(sig)
    assert json.loads(json.dumps(back)) == json.loads(json.dumps(sig))
    assert pickle.loads(pickle.dumps(sig)) == sig


def test_unknown_subtask_type_and_non_signatures_are_clear_errors():
    with pytest.raises(ValueError, match="Unknown subtask_type 'nope'"):
        signature_from_dict({"task": "x", "subtask_type": "nope"})
    with pytest.raises(ValueError, match="no 'task' key"):
        signature_from_dict({"args": []})
    with pytest.raises(TypeError, match=r"pass a signature instead: add.s"):
        chain(add.s(1, 1), add)
    with pytest.raises(TypeError, match=r"Write add.s\(\)"):
        add.s(1, 1) | add
    with pytest.raises(TypeError, match="both sides of '|'"):
        add.s(1, 1) | 3
    with pytest.raises(TypeError, match="both sides of '|'"):
        {"a": 1} | add.s(1, 1)


def test_partial_args_are_prepended_and_kwargs_merged_new_wins():
    s = kw.s(2, debug=True)
    c = s.clone((1,), {"debug": False})
    assert c.args == [1, 2] and c.kwargs == {"debug": False}
    assert s.args == [2] and s.kwargs == {"debug": True}  # clone leaves the original alone
    assert kw.si(1).clone((5,), {"y": 3}).args == [1]  # immutable ignores partials
    assert kw.s(1)(y=4) == {"x": 1, "y": 4, "debug": False}  # __call__ runs inline


def test_set_link_and_freeze():
    s = add.s(1, 1).set(queue="q", countdown=1)
    assert s.options == {"queue": "q", "countdown": 1}
    cb = s.link(mul.s(2))
    s.link(mul.s(2))  # the same callback twice is linked once
    eb = s.on_error(errback_old.s())
    assert s.options["link"] == [cb] and s.options["link_error"] == [eb]
    res = s.freeze()
    assert s.id == res.id and s.freeze().id == res.id
    with pytest.raises(TypeError, match="link= takes a signature"):
        s.link("nope")


# -- composition rules ----------------------------------------------------------------------
def test_pipe_builds_one_flat_chain():
    c = add.s(1, 1) | mul.s(2) | (mul.s(3) | mul.s(4))
    assert type(c) is chain
    assert [t.task for t in c.tasks] == [add.name, mul.name, mul.name, mul.name]
    assert type(chain(add.s(4) | mul.s(8))) is chain and len(chain(add.s(4) | mul.s(8)).tasks) == 2
    assert len(chain([add.s(1, 1), mul.s(2)]).tasks) == 2
    assert len(chain(s for s in [add.s(1, 1), mul.s(2)]).tasks) == 2


def test_group_then_task_is_a_chord_and_chord_then_task_joins_the_body():
    c = group(add.s(1, 1), add.s(2, 2)) | xsum.s()
    assert type(c) is chord and c.body.task == xsum.name
    c2 = c | mul.s(2)
    assert type(c2) is chord and type(c2.body) is chain
    assert [t.task for t in c2.body.tasks] == [xsum.name, mul.name]
    assert type(c.body) is Signature  # c itself is unchanged


def test_chain_ending_in_group_then_task_upgrades_to_chord():
    c = add.s(1, 1) | group(mul.s(2), mul.s(3)) | xsum.s()
    assert type(c) is chain and len(c.tasks) == 2
    assert type(c.tasks[1]) is chord and c.tasks[1].body.task == xsum.name


def test_single_member_group_unrolls_and_empty_group_is_a_no_op():
    c = add.s(1, 1) | group(mul.s(2))
    assert type(c) is chain and type(c.tasks[1]) is Signature
    assert (add.s(1, 1) | group()) == add.s(1, 1)


def test_group_after_group_is_a_chord_with_a_group_body():
    c = group(add.s(1, 1), add.s(2, 2)) | group(xsum.s(), xsum.s())
    assert type(c) is chord and type(c.body) is group


def test_in_place_pipe_does_not_merge_dicts():
    s = add.s(1, 1)
    s |= mul.s(2)
    assert type(s) is chain


# -- eager execution: the seeds' values ----------------------------------------------------
@EAGER
def test_seed_group():
    assert group(add.s(i, i) for i in range(10))().get() == [0, 2, 4, 6, 8, 10, 12, 14, 16, 18]


@EAGER
def test_seed_chains():
    assert chain(add.s(4, 4) | mul.s(8))().get() == 64
    assert (add.s(4, 4) | mul.s(8))().get() == 64
    g = chain(add.s(4) | mul.s(8))
    assert g(4).get() == 64


@EAGER
def test_seed_chords():
    assert chord((add.s(i, i) for i in range(10)), xsum.s())().get() == 90
    assert (group(add.s(i, i) for i in range(10)) | xsum.s())().get() == 90


@EAGER
def test_seed_partial_group():
    g = group(add.s(i) for i in range(10))
    assert g(10).get() == [10, 11, 12, 13, 14, 15, 16, 17, 18, 19]
    assert g(20).get()[0] == 20  # the group is reusable


@EAGER
def test_seed_task_then_group_gives_each_member_the_result():
    assert (add.s(2, 2) | group(mul.s(i) for i in range(3)))().get() == [0, 4, 8]


@EAGER
def test_signature_delay_and_partials():
    assert add.s(2, 2).delay().get() == 4
    assert add.s(2).delay(8).get() == 10
    assert kw.s(1, debug=True).delay(debug=False).get()["debug"] is False


# -- eager: results, lineage and nesting ------------------------------------------------------
@EAGER
def test_chain_result_parents_walk_back_with_lineage():
    res = (add.s(1, 1) | mul.s(3) | mul.s(5))()
    assert isinstance(res, EagerResult) and res.get() == 30
    assert res.parent.get() == 6 and res.parent.parent.get() == 2
    assert res.parent.parent.parent is None


@EAGER
def test_thousand_link_chain_runs_without_recursion():
    res = chain([add.s(0, 1)] + [add.s(1) for _ in range(999)])()
    assert res.get() == 1000
    node, depth = res, 0
    while node.parent is not None:
        node, depth = node.parent, depth + 1
    assert depth == 999


@EAGER
def test_chain_inside_group_and_chord_inside_chain():
    g = group(add.s(1, 1) | mul.s(10), add.s(2, 2))
    assert g().get() == [20, 4]
    c = add.s(1, 1) | chord([mul.s(2), mul.s(3)], xsum.s()) | mul.s(10)
    assert c().get() == 100  # (2*2 + 2*3) * 10


@EAGER
def test_nested_groups_and_chords_in_a_chord_header():
    header = [
        group(add.s(1, 1), add.s(2, 2)),
        chord([add.s(3, 3)], xsum.s()),
        add.s(4, 4) | mul.s(2),
    ]
    assert chord(header, record.s())().get() == [[2, 4], 6, 16]


@EAGER
def test_chord_partial_body_and_empty_header():
    assert chord(add.s(i, i) for i in range(3))(xsum.s()).get() == 6
    assert chord([], xsum.s())().get() == 0
    with pytest.raises(ValueError, match="no body"):
        chord([add.s(1, 1)])()


@EAGER
def test_chord_failure_fails_the_body_with_chord_error_and_calls_errbacks():
    body = xsum.s()
    body.link_error(errback_new.s())
    body.link_error(errback_old.s())
    res = chord([add.s(1, 1), fail.s("bad")], body)()
    assert res.state == states.FAILURE
    with pytest.raises(ChordError, match=r"Dependency .* raised ValueError\('bad'\)"):
        res.get()
    kinds = sorted(c[0] for c in calls)
    assert kinds == ["new", "old"]
    new = next(c for c in calls if c[0] == "new")
    assert new[1] == res.id and new[2] == "ChordError"


@EAGER
def test_chain_stops_at_a_failure_and_later_links_fail_with_it():
    res = (add.s(1, 1) | fail.si("x") | record.s())()
    assert calls == []
    assert res.state == states.FAILURE and res.parent.state == states.FAILURE
    assert res.parent.parent.get() == 2
    with pytest.raises(ValueError, match="x"):
        res.get()


@EAGER
def test_chain_link_error_applies_to_every_link_and_link_to_the_last():
    res = chain(add.s(1, 1), mul.s(2)).apply_async(link=record.s(), link_error=errback_old.s())
    assert res.get() == 4 and calls == [((4,), {})]
    calls.clear()
    res = chain(add.s(1, 1), fail.si("y"), mul.s(2)).apply_async(link_error=errback_old.s())
    assert [c[0] for c in calls] == ["old"]


@EAGER
def test_link_callbacks_get_the_result_unless_immutable():
    add.s(2, 2).apply_async(link=[record.s(), record.si("fixed")])
    assert calls == [((4,), {}), (("fixed",), {})]


@EAGER
def test_group_link_is_refused_with_a_hint():
    with pytest.raises(TypeError, match="Use a chord"):
        group(add.s(1, 1)).link(record.s())
    with pytest.raises(TypeError, match="Use a chord"):
        group(add.s(1, 1)).apply_async(link=record.s())


@EAGER
def test_group_result_api():
    res = group(add.s(1, 1), fail.s("z"), add.s(2, 2))()
    assert isinstance(res, GroupResult) and len(res) == 3
    assert res.ready() and res.failed() and not res.successful()
    assert res.completed_count() == 2
    assert res.get(propagate=False)[0] == 2
    with pytest.raises(ValueError):
        res.get()


@EAGER
def test_map_starmap_and_chunks():
    assert xsum.map([[1, 2], [3, 4]]).apply_async().get() == [3, 7]
    assert add.starmap(zip(range(3), range(3), strict=True)).delay().get() == [0, 2, 4]
    assert xmap(add.s(10), range(3)).apply().get() == [10, 11, 12]
    assert ~xstarmap(add.s(), [(1, 1)]) == [2]
    res = add.chunks(zip(range(10), range(10), strict=True), 3)()
    assert res.get() == [[0, 2, 4], [6, 8, 10], [12, 14, 16], [18]]
    assert len(add.chunks(zip(range(10), range(10), strict=True), 5).group().tasks) == 2
    with pytest.raises(ValueError, match="chunk size"):
        chunks(add.s(), [(1, 2)], 0)


def test_apply_runs_eagerly_without_always_eager():
    assert (add.s(4, 4) | mul.s(8)).apply().get() == 64
    assert group(add.s(i, i) for i in range(3)).apply().get() == [0, 2, 4]
    assert chord([add.s(1, 1)], xsum.s()).apply().get() == 2


def test_empty_chain_is_a_clear_error():
    with pytest.raises(ValueError, match="no tasks"):
        chain().apply()
