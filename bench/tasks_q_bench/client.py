"""Client half for django-tasks-q: run with the repo's .venv from the repo root."""

from __future__ import annotations

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "testproject.settings")
django.setup()

from clientlib import main  # noqa: E402

from bench.tasks_q_bench.tasks import noop, rt  # noqa: E402

IGNORE = os.environ.get("BENCH_RESULTS", "off") == "off"


def one() -> object:
    return noop.apply_async(ignore_result=IGNORE)


def bulk(n: int) -> object:
    """``n`` tasks through the bulk path: one pipeline (Redis) or transaction (django://)."""
    return noop.apply_async_many([((), {})] * n, ignore_result=IGNORE)


main(one=one, roundtrip=lambda: rt.delay().get(timeout=30), bulk=bulk)
