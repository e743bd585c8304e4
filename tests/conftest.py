"""Shared fixtures. Service reachability lives in tests/services.py."""

from __future__ import annotations

import pytest

from tests import services


@pytest.fixture
def redis_url() -> str:
    services.require("redis")
    return services.REDIS_URL


@pytest.fixture
def amqp_url() -> str:
    services.require("amqp")
    return services.AMQP_URL
