"""Every canvas example of the seeds (/work/shared/seeds), on a real worker.

Only the import line differs from the tutorials: ``from django_tasks_q import
group, chain, chord`` instead of ``from celery import ...``.
"""

from __future__ import annotations

import pytest

from django_tasks_q import chain, chord, group
from testproject.demo.tasks import add, mul, xsum
from tests.integration.canvas_app.harness import broker, running_worker  # noqa: F401

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(180)]
TIMEOUT = 30


def test_seed_canvas_examples_give_the_seeds_values(broker):  # noqa: F811
    with running_worker(broker):
        # Groups
        assert group(add.s(i, i) for i in range(10))().get(timeout=TIMEOUT) == [
            0, 2, 4, 6, 8, 10, 12, 14, 16, 18,
        ]  # fmt: skip
        # partial group
        g = group(add.s(i) for i in range(10))
        assert g(10).get(timeout=TIMEOUT) == [10, 11, 12, 13, 14, 15, 16, 17, 18, 19]
        # Chains: (4 + 4) * 8
        assert chain(add.s(4, 4) | mul.s(8))().get(timeout=TIMEOUT) == 64
        assert (add.s(4, 4) | mul.s(8))().get(timeout=TIMEOUT) == 64
        # partial chain: (? + 4) * 8
        g = chain(add.s(4) | mul.s(8))
        assert g(4).get(timeout=TIMEOUT) == 64
        # Chords
        assert chord((add.s(i, i) for i in range(10)), xsum.s())().get(timeout=TIMEOUT) == 90
        assert (group(add.s(i, i) for i in range(10)) | xsum.s())().get(timeout=TIMEOUT) == 90
        # upload_document.s(file) | group(apply_filter.s() for filter in filters)
        res = (add.s(2, 2) | group(mul.s(f) for f in (1, 2, 3)))()
        assert res.get(timeout=TIMEOUT) == [4, 8, 12]


def test_seed_signature_examples(broker):  # noqa: F811
    with running_worker(broker, concurrency=2):
        assert add.signature((2, 2), countdown=1).delay().get(timeout=TIMEOUT) == 4
        s1 = add.s(2, 2)
        assert s1.delay().get(timeout=TIMEOUT) == 4
        s2 = add.s(2)
        assert s2.delay(8).get(timeout=TIMEOUT) == 10
        res = add.delay(2, 2)
        assert res.get(timeout=TIMEOUT) == 4
