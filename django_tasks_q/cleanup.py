"""Deleting expired results in chunks (DESIGN D5), for ``manage.py tasks_q cleanup``.

Rows are deleted by primary-key ranges: one query finds where the next chunk of
expired rows ends, one ``DELETE`` removes that range. No row is ever loaded into
Python, each chunk commits on its own, so memory stays flat and locks stay short
however many rows have piled up.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from django.db import router
from django.db.models import Q, QuerySet

logger = logging.getLogger("django_tasks_q.cleanup")


def delete_in_chunks(queryset: QuerySet, chunk_size: int = 1000) -> int:
    """Delete the rows of ``queryset`` in primary-key order, ``chunk_size`` at a time.

    Returns the number of rows deleted. For models without delete signals or cascades
    (the result models) each chunk is one ``DELETE``; otherwise Django loads at most
    one chunk at a time to honour them.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}.")
    queryset = queryset.order_by("pk")
    total = 0
    last: Any = None
    while True:
        window = queryset if last is None else queryset.filter(pk__gt=last)
        bounds = window.values_list("pk", flat=True)[chunk_size - 1 : chunk_size]
        upper = next(iter(bounds), None)
        chunk = window if upper is None else window.filter(pk__lte=upper)
        total += chunk.delete()[0]
        if upper is None:
            return total
        last = upper


def delete_expired_rows(cutoff: datetime, chunk_size: int = 1000) -> int:
    """Delete results finished before ``cutoff``, and groups and finished chords as old."""
    from .models import ChordCounter, GroupResult, TaskResult

    deleted = 0
    for model, condition in (
        (TaskResult, Q(date_done__lt=cutoff)),
        (GroupResult, Q(date_done__lt=cutoff) | Q(date_done__isnull=True, date_created__lt=cutoff)),
        (ChordCounter, Q(remaining__lte=0, date_created__lt=cutoff)),
    ):
        alias = router.db_for_write(model)
        count = delete_in_chunks(model.objects.using(alias).filter(condition), chunk_size)
        if count:
            logger.info("Deleted %d expired %s rows.", count, model._meta.object_name)
        deleted += count
    return deleted


def cleanup_results(expires: timedelta | float | None = None, chunk_size: int = 1000) -> int:
    """Delete results older than ``expires`` (default RESULT_EXPIRES) from the result store.

    Returns how many were deleted. Stores with TTLs (Redis) expire keys themselves
    and return 0; with ``RESULT_EXPIRES = None`` nothing is deleted.
    """
    from .results import get_store

    store = get_store()
    if expires is not None and not isinstance(expires, timedelta):
        expires = timedelta(seconds=float(expires))
    return store.cleanup(expires=expires, chunk_size=chunk_size)
