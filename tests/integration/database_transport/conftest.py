"""Fixtures of the django:// transport tests: connections closed after each test, a fresh queue."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kombu import Connection, Exchange, Queue

from django_tasks_q.messaging.connection import broker_connection


@pytest.fixture
def connect() -> Iterator[Callable[..., Connection]]:
    opened: list[Connection] = []

    def connect(**options: Any) -> Connection:
        options.setdefault("polling_interval", 0.05)
        conn = broker_connection("django://", transport_options=options)
        conn.ensure_connection(max_retries=1)
        opened.append(conn)
        return conn

    yield connect
    for conn in opened:
        conn.close()


@pytest.fixture
def queue() -> Queue:
    name = f"tq-db-{uuid.uuid4().hex[:10]}"
    return Queue(name, Exchange(name, type="direct"), routing_key=name)
