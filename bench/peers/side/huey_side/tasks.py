from benchcounter import hit
from benchenv import REDIS_URL, RESULTS
from huey import RedisHuey

# notify_result=True makes result.get(blocking=True) wait on BLPOP instead of a
# 50 ms-and-up sleep loop; it is Huey's documented low-latency option.
huey = RedisHuey("bench", url=REDIS_URL, results=RESULTS != "off", notify_result=True)


@huey.task()
def noop():
    hit()
    return 1


@huey.task()
def rt():
    return 1
