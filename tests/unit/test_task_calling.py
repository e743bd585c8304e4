"""The task API when called: bind and self.request, eager mode, argument errors, typing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.test import override_settings

from django_tasks_q import EagerResult, states, task
from django_tasks_q.exceptions import (
    EncodeError,
    MaxRetriesExceededError,
)
from tests.unit.test_task_api import plain_add

EAGER = override_settings(TASKS_Q={"ALWAYS_EAGER": True})


# -- bind and self.request ---------------------------------------------------------
@task(bind=True, name="api.whoami")
def whoami(self, x):
    r = self.request
    return {
        "self": self.name,
        "id": r.id,
        "args": r.args,
        "retries": r.retries,
        "is_eager": r.is_eager,
        "called_directly": r.called_directly,
    }


def test_bound_task_gets_itself_and_its_request_inline():
    out = whoami(1)
    assert out["self"] == "api.whoami"
    assert out["called_directly"] is True
    assert out["args"] == [1]
    assert out["id"] is None


def test_bound_task_sees_its_request_in_eager_mode():
    result = whoami.apply((7,), task_id="fixed-id")
    out = result.get()
    assert out == {
        "self": "api.whoami",
        "id": "fixed-id",
        "args": [7],
        "retries": 0,
        "is_eager": True,
        "called_directly": False,
    }


def test_request_outside_a_task_is_empty_but_named():
    assert whoami.request.id is None
    assert whoami.request.task == "api.whoami"


# -- eager mode ------------------------------------------------------------------
def test_always_eager_delay_returns_an_eager_result_with_the_async_result_api():
    with EAGER:
        r = plain_add.delay(2, 2)
    assert isinstance(r, EagerResult)
    assert r.get() == 4 and r.get(timeout=1) == 4
    assert r.ready() and r.successful() and not r.failed()
    assert r.state == states.SUCCESS and r.status == states.SUCCESS
    assert r.result == 4
    assert isinstance(r.id, str) and r.id == r.task_id


def test_eager_failure_propagates_only_on_get_unless_eager_propagates():
    @task(name="api.eager_fail")
    def boom():
        raise KeyError("nope")

    with EAGER:
        r = boom.delay()
    assert r.state == states.FAILURE and r.failed()
    with pytest.raises(KeyError):
        r.get()
    assert isinstance(r.get(propagate=False), KeyError)
    assert "KeyError" in r.traceback
    with override_settings(TASKS_Q={"ALWAYS_EAGER": True, "EAGER_PROPAGATES": True}):
        with pytest.raises(KeyError):
            boom.delay()


def test_apply_runs_in_process_even_when_not_eager():
    r = plain_add.apply((1, 2), task_id="abc")
    assert isinstance(r, EagerResult)
    assert r.id == "abc" and r.get() == 3


def test_retries_in_eager_mode_run_again_until_success():
    calls = []

    @task(bind=True, name="api.eager_retry", max_retries=3, default_retry_delay=0)
    def flaky(self):
        calls.append(self.request.retries)
        if self.request.retries < 2:
            raise self.retry(exc=ConnectionError("try again"), countdown=0)
        return "ok"

    with EAGER:
        r = flaky.delay()
    assert r.get() == "ok"
    assert calls == [0, 1, 2]
    assert r.retries == 2


def test_retries_in_eager_mode_stop_at_max_retries_with_the_original_error():
    @task(bind=True, name="api.eager_retry_max", max_retries=2, default_retry_delay=0)
    def always(self):
        raise self.retry(exc=ConnectionError("down"))

    with EAGER:
        r = always.delay()
    assert r.state == states.FAILURE
    with pytest.raises(ConnectionError, match="down"):
        r.get()


def test_retry_without_exc_past_max_raises_max_retries_exceeded():
    @task(bind=True, name="api.eager_retry_noexc", max_retries=1, default_retry_delay=0)
    def always(self):
        raise self.retry()

    r = always.apply()
    assert isinstance(r.get(propagate=False), MaxRetriesExceededError)


def test_autoretry_for_retries_in_eager_mode():
    calls = []

    @task(
        name="api.eager_autoretry", autoretry_for=(OSError,), max_retries=2, default_retry_delay=0
    )
    def f():
        calls.append(1)
        if len(calls) < 3:
            raise OSError("flaky disk")
        return len(calls)

    assert f.apply().get() == 3


def test_retry_when_called_directly_reraises_the_exception():
    @task(bind=True, name="api.direct_retry")
    def f(self):
        raise self.retry(exc=ValueError("direct"))

    with pytest.raises(ValueError, match="direct"):
        f()


def test_async_def_task_runs_inline_and_eagerly():
    @task(name="api.async_add")
    async def async_add(x, y):
        return x + y

    assert async_add.is_async
    assert async_add(1, 2) == 3
    assert async_add.apply((3, 4)).get() == 7


# -- argument errors at call time -----------------------------------------------------
@pytest.mark.parametrize(
    "call",
    [
        lambda: plain_add.delay(1),
        lambda: plain_add.delay(1, 2, 3),
        lambda: plain_add.delay(1, z=2),
        lambda: plain_add.apply_async((1,)),
        lambda: plain_add.s(1).delay(),
    ],
)
def test_wrong_arguments_raise_type_error_naming_the_task(call):
    with pytest.raises(
        TypeError, match="Task 'tests.unit.test_task_api.plain_add' called with wrong arguments"
    ):
        call()


def test_wrong_arguments_for_bound_task_ignore_self():
    with pytest.raises(TypeError, match="'api.whoami' called with wrong arguments"):
        whoami.delay()
    with EAGER:
        assert whoami.delay(1).get()["args"] == [1]


def test_typing_false_skips_the_argument_check():
    @task(name="api.untyped", typing=False)
    def f(x):
        return x

    with override_settings(TASKS_Q={"BROKER_URL": "memory://"}):
        assert f.delay(1, 2, 3).id  # published as is: the worker will report the error


def test_unknown_apply_async_option_is_refused_with_a_suggestion():
    with pytest.raises(TypeError, match="unexpected option 'countdwn'. Did you mean 'countdown'"):
        plain_add.apply_async((1, 2), countdwn=3)


def test_unserialisable_argument_raises_at_call_time_naming_task_and_argument():
    with override_settings(TASKS_Q={"BROKER_URL": "memory://"}):
        with pytest.raises(EncodeError) as err:
            plain_add.delay(1, object())
        text = str(err.value)
        assert "'tests.unit.test_task_api.plain_add'" in text
        assert "argument 1 of type object" in text
        with pytest.raises(EncodeError, match="keyword argument 'y' of type set"):
            plain_add.delay(1, y={1, 2})


# -- typing ------------------------------------------------------------------
def test_public_types_check_with_mypy():
    """tests/typing/check_types.py type-checks, and its deliberate errors are caught."""
    pytest.importorskip("mypy")
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(root / "pyproject.toml"),
         "--cache-dir", os.devnull, "tests/typing/check_types.py"],
        cwd=root, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    errors = [line for line in out.splitlines() if ": error:" in line]
    expected = [line for line in errors if "expected-error" in _source_line(root, line)]
    unexpected = [line for line in errors if line not in expected]
    assert unexpected == [], out
    assert len(expected) == _count_expected(root), out


def _source_line(root: Path, error: str) -> str:
    path, lineno = error.split(":")[:2]
    return (root / path).read_text().splitlines()[int(lineno) - 1]


def _count_expected(root: Path) -> int:
    return (root / "tests" / "typing" / "check_types.py").read_text().count("# expected-error")
