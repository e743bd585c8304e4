"""Broker set-up and actors; ``dramatiq dramatiq_side.tasks`` loads both."""

from __future__ import annotations

import dramatiq
from benchcounter import hit
from benchenv import AMQP_URL, BROKER, QUEUE, REDIS_URL, RESULTS
from dramatiq.results import Results
from dramatiq.results.backends import RedisBackend

if BROKER == "amqp":
    from dramatiq.brokers.rabbitmq import RabbitmqBroker

    # pika reads the vhost from the path; kombu's "//" spelling of "/" must be "/%2F" here.
    url = AMQP_URL[:-2] + "/%2F" if AMQP_URL.endswith("//") else AMQP_URL
    broker = RabbitmqBroker(url=url)
else:
    from dramatiq.brokers.redis import RedisBroker

    broker = RedisBroker(url=REDIS_URL)

OPTIONS: dict = {}
if RESULTS != "off":
    broker.add_middleware(Results(backend=RedisBackend(url=REDIS_URL)))
    OPTIONS["store_results"] = True
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name=QUEUE, **OPTIONS)
def noop():
    hit()
    return 1


@dramatiq.actor(queue_name=QUEUE, **OPTIONS)
def rt():
    return 1
