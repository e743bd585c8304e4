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


@pytest.fixture(scope="session", autouse=True)
def _close_worker_connections(django_db_setup, django_db_blocker):
    """Torn down before the test database is dropped: close the worker's own connections.

    In-process workers keep a persistent connection per thread (messaging/database_conn.py);
    left open, PostgreSQL refuses to drop the test database.
    """
    yield
    from django_tasks_q.messaging.database_conn import close_all_own

    with django_db_blocker.unblock():
        close_all_own()
        _end_other_sessions()


def _end_other_sessions() -> None:
    """End what else this run left connected to the PostgreSQL test database.

    In-process workers' background threads (LISTEN, heartbeat keepers) may still hold
    a session; PostgreSQL would refuse to drop the database.
    """
    from django.db import connection

    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
