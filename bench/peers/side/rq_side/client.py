from benchenv import QUEUE, REDIS_URL, RESULTS
from clientlib import main
from redis import Redis
from rq import Queue

from rq_side.tasks import noop, rt

queue = Queue(QUEUE, connection=Redis.from_url(REDIS_URL))
# RQ always writes a result unless result_ttl=0 discards it at once.
OPTIONS = {"result_ttl": 0} if RESULTS == "off" else {}


def one():
    return queue.enqueue(noop, **OPTIONS)


def bulk(n, chunk=1000):
    while n > 0:
        size = min(chunk, n)
        queue.enqueue_many([Queue.prepare_data(noop, **OPTIONS) for _ in range(size)])
        n -= size


def roundtrip():
    job = queue.enqueue(rt)
    result = job.latest_result(timeout=30)
    if result is None or result.return_value != 1:
        raise RuntimeError(f"rq round trip failed: {result!r}")


main(one=one, roundtrip=roundtrip, bulk=bulk)
