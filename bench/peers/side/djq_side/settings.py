"""Django settings for the Django-Q2 peer.

Django-Q2 always keeps results in the Django database; ``save_limit=-1`` turns
that off (``BENCH_RESULTS=off``), ``0`` keeps every result.
"""

from benchenv import BROKER, CONCURRENCY, QUEUE, REDIS_URL, RESULTS, django_base

globals().update(django_base(["django_q", "djq_side"]))

Q_CLUSTER = {
    "name": QUEUE,
    "workers": CONCURRENCY,
    "save_limit": -1 if RESULTS == "off" else 0,
    "log_level": "WARNING",
    "timeout": 60,
    "retry": 120,
}
if BROKER == "db":
    Q_CLUSTER["orm"] = "default"
else:
    Q_CLUSTER["redis"] = REDIS_URL
