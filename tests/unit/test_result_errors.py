"""Exceptions to JSON and back, the result codec, and the write rules shared by stores."""

from __future__ import annotations

import datetime
import decimal
import sys
import uuid

import pytest

from django_tasks_q import states
from django_tasks_q.exceptions import RemoteError, TaskRevokedError
from django_tasks_q.results import base, codec, errors


class CustomError(Exception):
    """Importable: this module is loaded."""


class KeywordOnlyError(Exception):
    def __init__(self, *, code: int) -> None:
        self.code = code
        super().__init__(f"code {code}")


class Opaque:
    """Not JSON-serialisable."""


class Outer:
    class NestedError(Exception):
        pass


def roundtrip(exc: BaseException) -> BaseException:
    return errors.exception_from_dict(codec.loads(codec.dumps(errors.exception_to_dict(exc))))


# -- exceptions -------------------------------------------------------------------------


def test_builtin_exception_is_stored_celery_style_and_rebuilt() -> None:
    data = errors.exception_to_dict(ValueError("bad", 42))

    assert data == {"exc_type": "ValueError", "exc_module": "builtins", "exc_message": ["bad", 42]}
    rebuilt = roundtrip(ValueError("bad", 42))
    assert type(rebuilt) is ValueError
    assert rebuilt.args == ("bad", 42)


def test_custom_exception_from_a_loaded_module_is_rebuilt() -> None:
    rebuilt = roundtrip(CustomError("custom"))

    assert type(rebuilt) is CustomError
    assert str(rebuilt) == "custom"


def test_nested_exception_class_is_found_by_qualname() -> None:
    assert type(roundtrip(Outer.NestedError("x"))) is Outer.NestedError


def test_exception_with_an_unusual_init_keeps_its_type_and_args() -> None:
    rebuilt = roundtrip(KeywordOnlyError(code=7))

    assert type(rebuilt) is KeywordOnlyError
    assert rebuilt.args == ("code 7",)


def test_unimportable_exception_becomes_remote_error_with_original_names() -> None:
    data = {"exc_type": "GoneError", "exc_module": "no_such_module_xyz", "exc_message": ["why"]}

    rebuilt = errors.exception_from_dict(data)

    assert isinstance(rebuilt, RemoteError)
    assert (rebuilt.exc_type, rebuilt.exc_module, rebuilt.args) == (
        "GoneError",
        "no_such_module_xyz",
        ("why",),
    )
    assert str(rebuilt) == "no_such_module_xyz.GoneError: why"
    # stored again (a chord propagating it), it keeps the original type name
    assert errors.exception_to_dict(rebuilt) == data


def test_names_that_are_not_exception_classes_are_never_instantiated() -> None:
    for data in (
        {"exc_type": "dumps", "exc_module": "json", "exc_message": []},
        {"exc_type": "SystemExit", "exc_module": "builtins", "exc_message": [1]},
        {"exc_type": "KeyboardInterrupt", "exc_module": "builtins", "exc_message": []},
        {"exc_type": "Missing", "exc_module": "builtins", "exc_message": []},
    ):
        rebuilt = errors.exception_from_dict(data)
        assert isinstance(rebuilt, RemoteError), data
        assert rebuilt.exc_type == data["exc_type"]


def test_modules_outside_installed_apps_are_never_imported(tmp_path, monkeypatch) -> None:
    (tmp_path / "tq_never_imported.py").write_text("class SideEffectError(Exception):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    data = {"exc_type": "SideEffectError", "exc_module": "tq_never_imported", "exc_message": []}

    rebuilt = errors.exception_from_dict(data)

    assert isinstance(rebuilt, RemoteError)
    assert "tq_never_imported" not in sys.modules


def test_modules_of_installed_apps_are_imported_on_demand(tmp_path, monkeypatch) -> None:
    package = tmp_path / "tq_app_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "errors.py").write_text("class AppError(Exception):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(errors, "_installed_app_packages", lambda: {"tq_app_pkg"})
    data = {"exc_type": "AppError", "exc_module": "tq_app_pkg.errors", "exc_message": ["m"]}

    try:
        rebuilt = errors.exception_from_dict(data)
        assert type(rebuilt).__name__ == "AppError"
        assert type(rebuilt).__module__ == "tq_app_pkg.errors"
    finally:
        sys.modules.pop("tq_app_pkg.errors", None)
        sys.modules.pop("tq_app_pkg", None)


def test_unencodable_exception_args_are_stored_as_repr() -> None:
    data = errors.exception_to_dict(ValueError(Opaque()))

    assert isinstance(data["exc_message"][0], str)
    codec.dumps(data)


def test_garbage_instead_of_an_exception_dict_still_gives_an_exception() -> None:
    assert isinstance(errors.exception_from_dict(None), RemoteError)
    assert errors.exception_from_dict("text").args == ("text",)


# -- codec ------------------------------------------------------------------------------


def test_codec_round_trips_datetimes_decimals_and_uuids() -> None:
    value = {
        "when": datetime.datetime(2024, 3, 1, 12, 0, tzinfo=datetime.UTC),
        "day": datetime.date(2024, 3, 1),
        "price": decimal.Decimal("1.10"),
        "id": uuid.UUID(int=5),
        "raw": b"bytes",
    }

    assert codec.loads(codec.dumps(value)) == value


def test_codec_keeps_user_dicts_that_look_like_markers() -> None:
    value = {"__type__": "mine", "__value__": 1}

    assert codec.loads(codec.dumps(value)) == value


def test_capped_keeps_small_values_and_truncates_large_ones() -> None:
    assert codec.capped([1, 2], 100) == [1, 2]
    big = codec.capped(["x" * 500], 100)
    assert isinstance(big, str) and len(big) <= 100 and "truncated" in big
    assert codec.capped([Opaque()], 100).startswith("[")


# -- write rules ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("current", "new", "downgrade"),
    [
        (states.SUCCESS, states.STARTED, True),
        (states.FAILURE, "PROGRESS", True),
        (states.REVOKED, states.RETRY, True),
        (states.SUCCESS, states.FAILURE, False),
        (states.STARTED, states.SUCCESS, False),
        (states.RETRY, states.STARTED, False),
        (None, states.STARTED, False),
    ],
)
def test_is_downgrade(current, new, downgrade) -> None:
    assert base.is_downgrade(current, new) is downgrade


def test_precedence_orders_final_states_first() -> None:
    assert states.precedence(states.SUCCESS) < states.precedence(states.STARTED)
    assert states.precedence("PROGRESS") < states.precedence(states.PENDING)


def _record(task_id: str, state: str, **extra) -> dict:
    record = dict.fromkeys(base.META_FIELDS)
    record.update(task_id=task_id, status=state, **extra)
    return record


def test_merge_records_folds_a_batch_per_task_without_downgrading() -> None:
    started = _record("a", states.STARTED, date_started="t0", name="add")
    done = _record("a", states.SUCCESS, result=3)
    late = _record("a", states.STARTED, date_started="t9")
    other = _record("b", states.SUCCESS, result=1)

    merged = base.merge_records([started, done, late, other])

    assert [r["task_id"] for r in merged] == ["a", "b"]
    a = merged[0]
    assert (a["status"], a["result"], a["name"], a["date_started"]) == (
        states.SUCCESS,
        3,
        "add",
        "t0",
    )


def test_revoked_reason_without_an_exception_is_wrapped() -> None:
    data = base.ResultStore.encode_exception("user asked", states.REVOKED)

    rebuilt = errors.exception_from_dict(data)
    assert isinstance(rebuilt, TaskRevokedError)
    assert rebuilt.args == ("user asked",)
