"""Reachability of the real services the integration tests need.

Locally an unreachable service skips the test with a reason; under CI
(``CI=true``) it fails the run, so nothing is skipped silently there.
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlparse

import pytest

CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
POSTGRES_HOST = os.environ.get("POSTGRES_HOST", "127.0.0.1")
POSTGRES_PORT = int(os.environ.get("POSTGRES_PORT", "5432"))
MYSQL_HOST = os.environ.get("MYSQL_HOST", "127.0.0.1")
MYSQL_PORT = int(os.environ.get("MYSQL_PORT", "3306"))


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def _endpoint(name: str) -> tuple[str, int]:
    if name == "redis":
        u = urlparse(REDIS_URL)
        return u.hostname or "127.0.0.1", u.port or 6379
    if name == "amqp":
        u = urlparse(AMQP_URL)
        return u.hostname or "127.0.0.1", u.port or 5672
    if name == "postgres":
        return POSTGRES_HOST, POSTGRES_PORT
    if name == "mysql":
        return MYSQL_HOST, MYSQL_PORT
    raise ValueError(name)


def require(name: str) -> None:
    """Skip (locally) or fail (CI) the calling test when service ``name`` is down."""
    host, port = _endpoint(name)
    if _reachable(host, port):
        return
    reason = f"{name} is not reachable at {host}:{port}"
    if CI:
        pytest.fail(f"{reason} (CI=true: a missing service fails the run)")
    pytest.skip(reason)
