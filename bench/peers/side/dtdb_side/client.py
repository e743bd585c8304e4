import time

import django

django.setup()

from clientlib import main  # noqa: E402

from dtdb_side.tasks import noop, rt  # noqa: E402

POLL = 0.005  # django-tasks has no blocking wait: poll the result row every 5 ms.


def roundtrip():
    result = rt.enqueue()
    deadline = time.monotonic() + 30
    while not result.is_finished:
        if time.monotonic() > deadline:
            raise RuntimeError("django-tasks-db round trip timed out")
        time.sleep(POLL)
        result.refresh()
    if result.return_value != 1:
        raise RuntimeError(f"django-tasks-db round trip failed: {result.status}")


main(one=noop.enqueue, roundtrip=roundtrip)
