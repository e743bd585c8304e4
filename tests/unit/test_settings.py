"""The TASKS_Q settings object: defaults, validation, reload on override_settings."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from django_tasks_q.conf import DEFAULTS, on_reload, settings


def test_defaults_apply_when_a_key_is_not_set():
    with override_settings(TASKS_Q={}):
        assert settings.BROKER_URL == "django://"
        assert settings.RESULT_BACKEND == "django-db"
        assert settings.ACCEPT_CONTENT == ["json"]
        assert settings.TASK_SERIALIZER == "json"
        assert settings.DEFAULT_QUEUE == "default"
        assert settings.MESSAGE_MAX_SIZE == 1024 * 1024
        assert settings.ALWAYS_EAGER is False
        assert settings.as_dict() == DEFAULTS


def test_tasks_q_of_none_means_all_defaults():
    with override_settings(TASKS_Q=None):
        assert settings.as_dict() == DEFAULTS


def test_user_value_overrides_default_and_others_keep_theirs():
    with override_settings(TASKS_Q={"DEFAULT_QUEUE": "low", "MAX_RETRIES": 7}):
        assert settings.DEFAULT_QUEUE == "low"
        assert settings.MAX_RETRIES == 7
        assert settings.BROKER_URL == "django://"


def test_override_settings_reloads_and_restores():
    # Given the test project's settings
    before = settings.as_dict()["QUEUES"]
    # When TASKS_Q is overridden, the new value is read at once
    with override_settings(TASKS_Q={"QUEUES": ["a", "b"]}):
        assert settings.QUEUES == ["a", "b"]
    # Then leaving the block restores the previous value
    assert settings.QUEUES == before


def test_reload_hooks_run_when_tasks_q_changes():
    calls = []

    @on_reload
    def hook():
        calls.append(1)

    try:
        with override_settings(TASKS_Q={"DEFAULT_QUEUE": "x"}):
            assert calls
    finally:
        from django_tasks_q import conf

        conf._reload_hooks.remove(hook)


def test_unknown_key_names_the_key_and_the_nearest_valid_one():
    with override_settings(TASKS_Q={"BROKER_ULR": "redis://"}):
        with pytest.raises(ImproperlyConfigured) as err:
            settings.BROKER_URL  # noqa: B018
    text = str(err.value)
    assert "'BROKER_ULR'" in text
    assert "Did you mean 'BROKER_URL'?" in text


def test_unknown_key_without_a_near_match_still_names_it():
    with override_settings(TASKS_Q={"ZZZZ": 1}):
        with pytest.raises(ImproperlyConfigured, match="unknown key 'ZZZZ'"):
            settings.as_dict()


@pytest.mark.parametrize("value", [["BROKER_URL"], "django://", 42])
def test_tasks_q_must_be_a_dict(value):
    with override_settings(TASKS_Q=value):
        with pytest.raises(ImproperlyConfigured, match="TASKS_Q must be a dict, got"):
            settings.BROKER_URL  # noqa: B018


def test_reading_an_invalid_attribute_is_an_attribute_error_with_a_hint():
    with pytest.raises(AttributeError, match="Did you mean 'BROKER_URL'"):
        settings.BROKER_UR  # noqa: B018


def test_settings_are_read_lazily_not_at_import():
    # The settings object holds no cache until something reads it.
    settings.reload()
    assert settings._cache is None
    assert settings.DEFAULT_QUEUE
    assert settings._cache is not None
