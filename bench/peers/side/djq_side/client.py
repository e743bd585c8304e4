import django

django.setup()

from clientlib import main  # noqa: E402
from django_q.tasks import async_task, result  # noqa: E402


def one():
    return async_task("djq_side.tasks.noop")


def roundtrip():
    # result(wait=...) polls the database every 10 ms: Django-Q2's own way to wait.
    value = result(async_task("djq_side.tasks.rt"), wait=30_000)
    if value != 1:
        raise RuntimeError(f"django-q2 round trip failed: {value!r}")


main(one=one, roundtrip=roundtrip)
