"""The task API: @task forms and options, class-based tasks, bind, eager mode, argument errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.test import override_settings

from django_tasks_q import EagerResult, Task, states, task
from django_tasks_q.exceptions import (
    DuplicateTaskName,
    EncodeError,
    ImproperlyConfiguredTask,
    MaxRetriesExceededError,
)
from django_tasks_q.registry import tasks
from django_tasks_q.task import TASK_OPTIONS, register_task_class

EAGER = override_settings(TASKS_Q={"ALWAYS_EAGER": True})


# -- declaring tasks --------------------------------------------------------------
@task
def plain_add(x, y):
    """Add two numbers."""
    return x + y


@task(name="api.named_mul", queue="math", priority=3)
def named_mul(x, y):
    return x * y


def test_bare_decorator_makes_a_registered_task_named_module_function():
    assert isinstance(plain_add, Task)
    assert plain_add.name == "tests.unit.test_task_api.plain_add"
    assert tasks[plain_add.name] is plain_add
    assert plain_add.__doc__ == "Add two numbers."
    assert plain_add.__name__ == "plain_add"
    assert repr(plain_add) == "<@task: tests.unit.test_task_api.plain_add>"


def test_decorator_with_options_sets_name_and_options():
    assert named_mul.name == "api.named_mul"
    assert tasks["api.named_mul"] is named_mul
    assert (named_mul.queue, named_mul.priority) == ("math", 3)


def test_calling_a_task_runs_it_inline():
    assert plain_add(2, 3) == 5
    assert named_mul(x=4, y=5) == 20


ALL_OPTIONS = {
    "queue": "q",
    "priority": 9,
    "serializer": "json",
    "max_retries": 5,
    "default_retry_delay": 1.5,
    "autoretry_for": (IOError,),
    "dont_autoretry_for": (FileNotFoundError,),
    "retry_kwargs": {"max_retries": 2},
    "retry_backoff": 2,
    "retry_backoff_max": 60,
    "retry_jitter": False,
    "ignore_result": True,
    "acks_late": False,
    "reject_on_worker_lost": True,
    "track_started": True,
    "time_limit": 30,
    "soft_time_limit": 20,
    "rate_limit": "10/m",
    "expires": 3600,
    "typing": False,
    "store_errors_even_if_ignored": True,
    "routing_key": "rk",
    "acks_on_failure_or_timeout": False,
}


def test_every_documented_option_is_accepted_and_kept():
    assert set(ALL_OPTIONS) == set(TASK_OPTIONS)

    @task(name="api.all_options", **ALL_OPTIONS)
    def f():
        return 1

    for key, value in ALL_OPTIONS.items():
        assert getattr(f, key) == value, key


def test_single_exception_class_for_autoretry_is_made_a_tuple():
    @task(name="api.autoretry_single", autoretry_for=KeyError)
    def f():
        return 1

    assert f.autoretry_for == (KeyError,)


def test_unknown_option_is_refused_at_decoration_with_a_suggestion():
    with pytest.raises(TypeError, match="unknown option 'max_retry'. Did you mean 'max_retries'"):

        @task(max_retry=3)
        def f():
            return 1


@pytest.mark.parametrize(
    "options, text",
    [
        ({"priority": 10}, "priority must be an int 0-9, got 10"),
        ({"priority": "high"}, "priority must be an int 0-9"),
        ({"rate_limit": "fast"}, "rate_limit must look like '10/m'"),
        ({"serializer": "jsn"}, "Unknown serializer 'jsn'"),
        ({"time_limit": -1}, "time_limit must be a non-negative number of seconds"),
        ({"soft_time_limit": "1m"}, "soft_time_limit must be a non-negative number"),
        ({"max_retries": -1}, "max_retries must be a non-negative int or None"),
        (
            {"autoretry_for": (ValueError, "x")},
            "autoretry_for must be a tuple of exception classes",
        ),
        ({"dont_autoretry_for": 3}, "dont_autoretry_for must be a tuple of exception classes"),
    ],
)
def test_bad_option_values_are_refused_at_decoration_naming_the_task(options, text):
    with pytest.raises(ImproperlyConfiguredTask) as err:

        @task(name="api.bad_option", **options)
        def f():
            return 1

    assert "'api.bad_option'" in str(err.value)
    assert text in str(err.value)
    assert "api.bad_option" not in tasks


def test_base_must_be_a_task_subclass():
    with pytest.raises(TypeError, match="must be a Task subclass"):
        task(base=dict)


def test_decorating_a_non_callable_is_refused():
    with pytest.raises(TypeError, match="decorates functions"):
        task()(42)


def test_duplicate_name_from_a_different_function_is_an_error():
    @task(name="api.dup")
    def first():
        return 1

    with pytest.raises(DuplicateTaskName) as err:

        @task(name="api.dup")
        def second():
            return 2

    text = str(err.value)
    assert "'api.dup'" in text and "first" in text and "second" in text and "name=" in text
    assert tasks["api.dup"] is first


def test_redefining_the_same_function_reregisters_it():
    # What re-importing a module (autoreload, tests) does: no error.
    def make():
        @task(name="api.same_origin")
        def same():
            return 1

        return same

    a, b = make(), make()
    assert tasks["api.same_origin"] is b and a is not b


# -- class-based tasks -------------------------------------------------------------
class CountingInit(Task):
    inits = 0
    events: list = []

    def __init__(self):
        type(self).inits += 1
        self.resource = object()

    def before_start(self, task_id, args, kwargs):
        self.events.append(("before_start", args))

    def on_success(self, retval, task_id, args, kwargs):
        self.events.append(("on_success", retval))

    def on_failure(self, exc, task_id, args, kwargs, einfo):
        self.events.append(("on_failure", type(exc).__name__, "Traceback" in str(einfo)))

    def after_return(self, status, retval, task_id, args, kwargs, einfo):
        self.events.append(("after_return", status))


@task(base=CountingInit, name="api.with_base")
def with_base(x):
    if x < 0:
        raise ValueError("negative")
    return x * 2


def test_base_class_init_runs_once_per_process():
    assert CountingInit.inits == 1
    resource = with_base.resource
    with_base(1)
    with_base.apply((2,))
    assert CountingInit.inits == 1
    assert with_base.resource is resource


def test_hooks_run_in_order_on_success_and_failure():
    CountingInit.events.clear()
    result = with_base.apply((3,))
    assert result.get() == 6
    assert CountingInit.events == [
        ("before_start", [3]),
        ("on_success", 6),
        ("after_return", states.SUCCESS),
    ]
    CountingInit.events.clear()
    result = with_base.apply((-1,))
    assert result.state == states.FAILURE
    assert CountingInit.events == [
        ("before_start", [-1]),
        ("on_failure", "ValueError", True),
        ("after_return", states.FAILURE),
    ]


class Shout(Task):
    name = "api.shout"

    def run(self, text):
        return text.upper()


def test_class_with_run_is_registered_by_its_name():
    shout = register_task_class(Shout)
    assert tasks["api.shout"] is shout
    assert shout("hi") == "HI"
    assert shout.apply(("hey",)).get() == "HEY"


def test_class_without_run_says_so():
    class NoRun(Task):
        name = "api.norun"

    t = register_task_class(NoRun)
    with pytest.raises(NotImplementedError, match="NoRun must define run"):
        t()


def test_class_options_are_defaults_and_decorator_options_override_them():
    class Slow(Task):
        max_retries = 9
        queue = "slow"

    @task(base=Slow, name="api.slow", queue="fast")
    def f():
        return 1

    assert (f.max_retries, f.queue) == (9, "fast")


def test_retry_defaults_come_from_settings_when_not_set_on_the_task():
    @task(name="api.retry_defaults")
    def f():
        return 1

    assert (f.max_retries, f.default_retry_delay) == (3, 180)
    with override_settings(TASKS_Q={"MAX_RETRIES": 7, "DEFAULT_RETRY_DELAY": 5}):
        assert (f.max_retries, f.default_retry_delay) == (7, 5)
        assert (named_retries.max_retries, named_retries.default_retry_delay) == (1, 2)


@task(name="api.named_retries", max_retries=1, default_retry_delay=2)
def named_retries():
    return 1


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
