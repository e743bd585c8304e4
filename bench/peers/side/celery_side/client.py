import django

django.setup()

from clientlib import main  # noqa: E402

from celery_side.tasks import noop, rt  # noqa: E402

main(one=noop.delay, roundtrip=lambda: rt.delay().get(timeout=30))
