"""Fixtures of the redis:// transport tests: a flushed Redis database of their own."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
import redis
from kombu import Connection

from django_tasks_q.messaging.connection import broker_connection

from .helpers import DB


@pytest.fixture
def url(redis_url: str):
    parts = urlsplit(redis_url)
    dedicated = f"{parts.scheme}://{parts.netloc}/{DB}"
    client = redis.Redis.from_url(dedicated)
    client.flushdb()
    yield dedicated
    client.flushdb()
    client.close()


@pytest.fixture
def raw(url: str):
    client = redis.Redis.from_url(url)
    yield client
    client.close()


@pytest.fixture
def connections(url: str):
    """connect(**transport_options): a connection closed at the end of the test."""
    opened: list[Connection] = []

    def connect(**transport_options) -> Connection:
        conn = broker_connection(url, transport_options=transport_options)
        opened.append(conn)
        return conn

    yield connect
    for conn in opened:
        conn.close()
