"""kombu channel over our Redis layout: atomic batch claims, no visibility timeout.

We subclass kombu's Redis channel to keep what it does well and Celery relies
on (connection pools, TLS and Sentinel parameters, exchange binding tables,
fanout over PUBLISH/SUBSCRIBE, publish batches, the event-loop poller) and
replace the paths that lose or duplicate messages: getting, acking, rejecting
and restoring.  See docs/brokers-redis.md.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from queue import Empty
from typing import Any

from kombu.transport import redis as kombu_redis
from kombu.utils.json import dumps

from . import delayed, keys, scripts
from .delayed import DelayedStore, ScheduledMessage
from .heartbeat import heartbeats
from .inflight import ClaimResult, InFlight, sweep_dead_owners
from .options import DEFAULT_CLAIM_BATCH, Options
from .payload import decode, far_eta, prepare_delivery
from .qos import QoS

logger = logging.getLogger("django_tasks_q.messaging.redis")

class Channel(kombu_redis.Channel):
    """A kombu Redis channel whose consumers claim atomically and heartbeat."""

    QoS = QoS
    #: One band per priority 0-9, highest first (transport option ``priority_steps``).
    priority_steps = list(range(10))

    def __init__(self, connection: Any, **kwargs: Any) -> None:
        transport_options = connection.client.transport_options
        if transport_options.get("global_keyprefix"):
            raise ValueError(
                "The django_tasks_q Redis transport does not support the 'global_keyprefix' "
                "transport option yet; give each application its own Redis database "
                "number instead (redis://host:6379/<db>)."
            )
        self.options = Options.resolve(transport_options)
        self._buffer: deque[tuple[str, dict[str, Any]]] = deque()
        self._inflight: InFlight | None = None
        self._no_ack_queues: set[str] = set()
        self._swept_at = float("-inf")
        self._next_eta_at: float | None = None
        self._claim_keys_cache: dict[tuple[str, ...], tuple[list[str], list[str]]] = {}
        super().__init__(connection, **kwargs)
        self.QoS = QoS  # acks are always emulated, whatever 'ack_emulation' says

    # -- clients ----------------------------------------------------------------

    def _sync_client(self) -> Any:
        """A client over the channel's pool, reused (kombu builds one per command)."""
        pool = self.pool
        client = self.__dict__.get("_client_for_pool")
        if client is None or client.connection_pool is not pool:
            client = self._client_for_pool = self._create_client()
        return client

    @contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        yield client or self._sync_client()

    def lease_client(self) -> Any:
        """A client for ``heartbeat.extend`` (never behind a blocking claim: those use ``client``)."""
        return self._sync_client()

    # -- owner ------------------------------------------------------------------

    @property
    def inflight(self) -> InFlight:
        """This channel's owner record, created (and heartbeating) on first claim."""
        if self._inflight is None:
            self.pool  # noqa: B018 - build the pool here, not in the heartbeat thread
            inflight = InFlight(self.options.heartbeat_timeout, self.sep)
            self._inflight = inflight
            heartbeats().register(
                inflight.owner,
                partial(self._beat, inflight),
                self.options.heartbeat_interval,
                self.options.heartbeat_timeout,
            )
        return self._inflight

    def _beat(self, inflight: InFlight) -> None:
        if inflight is self._inflight and not self._closing:
            inflight.beat(self._sync_client())

    def _release_inflight(self) -> None:
        inflight, self._inflight = self._inflight, None
        self._buffer.clear()
        if inflight is None:
            return
        heartbeats().unregister(inflight.owner)
        try:
            with self.conn_or_acquire() as client:
                inflight.release(client)
        except self.connection_errors + (self.ResponseError,):
            logger.warning(
                "Could not give back the messages of Redis consumer %s while closing; they "
                "will be redelivered once its heartbeat expires (%g s).",
                inflight.owner,
                self.options.heartbeat_timeout,
                exc_info=True,
            )

    def _after_fork(self) -> None:
        # The parent still owns its claims: the child starts with none.
        self._inflight = None
        self._buffer.clear()
        self._in_poll = None
        super()._after_fork()

    # -- claiming -----------------------------------------------------------------

    def _claim_limit(self) -> int:
        limit = self.options.claim_batch or self.qos.prefetch_count or DEFAULT_CLAIM_BATCH
        credit = self.qos.can_consume_max_estimate()
        return max(1, min(limit, credit) if credit is not None else limit)

    def _claim(
        self, client: Any, queues: list[str], limit: int, block: bool
    ) -> tuple[ClaimResult, list[tuple[str, dict[str, Any]]]]:
        """One claim round trip: the result and the (queue, payload) pairs to deliver.

        With ``block``, an empty claim leaves this owner registered as waiting on
        ``queues``: the caller then blocks on its inbox.
        """
        lists, waiting = self._claim_keys(tuple(queues))
        result = self.inflight.claim(
            client, lists, waiting if block else [], limit, self.options.delayed_move_limit
        )
        self._next_eta_at = (
            time.monotonic() + result.next_eta - result.now if result.next_eta else None
        )
        accepted = []
        for item in result.messages:
            message = self._accept(client, item.tag, item.list_key, item.raw)
            if message is not None:
                accepted.append(message)
        return result, accepted

    def _accept(
        self, client: Any, tag: str, list_key: str, raw: bytes
    ) -> tuple[str, dict[str, Any]] | None:
        """The (queue, payload) to deliver, or None if the message went elsewhere."""
        queue = keys.queue_of(list_key, self.sep)
        payload = decode(raw)
        if payload is None:
            logger.error(
                "Moved a message that is not a kombu JSON envelope from queue %r to %r.",
                queue,
                keys.undecodable(queue),
            )
            scripts.restore(
                client, [self.inflight.key, self.inflight.heartbeat_key, keys.OWNERS],
                ["own", self.inflight.owner, tag, keys.undecodable(queue), "", raw],
            )  # fmt: skip
            self.inflight.forget([tag])
            return None
        eta = far_eta(payload, self.options.eta_horizon)
        if eta is not None:  # e.g. from a Celery client: wait in the delayed store
            script_keys, args = delayed.schedule_args(
                eta, list_key, keys.waiting(queue), raw, inflight=self.inflight.key, tag=tag
            )
            scripts.schedule(client, script_keys, args)
            self.inflight.forget([tag])
            return None
        prepare_delivery(payload, tag)
        return queue, payload

    def _claim_keys(self, queues: tuple[str, ...]) -> tuple[list[str], list[str]]:
        """Ready lists in claim order (priority bands high to low) and waiting lists."""
        cached = self._claim_keys_cache.get(queues)
        if cached is None:
            bands = sorted(set(self.priority_steps), reverse=True)
            lists = [self._q_for_pri(queue, band) for band in bands for queue in queues]
            cached = self._claim_keys_cache[queues] = (lists, [keys.waiting(q) for q in queues])
        return cached

    def _brpop_start(self, timeout: float | None = None) -> None:
        """Claim a batch for the buffer, or wait on this owner's inbox if there is none."""
        if self._buffer or self._closing:
            return
        queues = self._queue_cycle.consume(len(self.active_queues))
        if not queues:
            return
        self._maybe_sweep()
        client = self.client
        while True:
            result, accepted = self._claim(client, queues, self._claim_limit(), block=True)
            self._queue_cycle.rotate(queues[0])
            if accepted:
                self._buffer.extend(accepted)
                return
            if not result.messages:
                break  # empty, and now waiting (claimed-but-diverted messages: claim again)
        seconds = float(timeout or self.brpop_timeout or 1)
        if self._next_eta_at is not None:
            seconds = min(seconds, self._next_eta_at - time.monotonic())
        connection = client.connection
        self._in_poll = connection
        self._brpop_sent_at = time.monotonic()
        connection.send_command("BLPOP", self.inflight.inbox_key, f"{max(0.001, seconds):.3f}")

    def _brpop_read(self, **options: Any) -> bool:
        """The blocking BLPOP returned: a handed message (deliver it), a poke or a timeout (claim)."""
        try:
            try:
                reply = self.client.parse_response(self.client.connection, "BLPOP", **options)
            except self.connection_errors:
                self.client.connection.disconnect()
                raise
        finally:
            self._in_poll = None
            self._flush_brpop_reauth()
        if not self._closing:
            handed = self.inflight.adopt(reply[1]) if reply else None
            if handed is not None:
                message = self._accept(self.client, handed.tag, handed.list_key, handed.raw)
                if message is not None:
                    self._buffer.append(message)
            self._brpop_start()
            if self._deliver_buffered():
                return True
        raise Empty()

    def _deliver_buffered(self) -> bool:
        """Hand one buffered message to its consumer, if the prefetch limit allows."""
        while self._buffer and self.qos.can_consume():
            queue, payload = self._buffer.popleft()
            tag = payload["properties"]["delivery_tag"]
            if queue not in self.connection._callbacks:  # cancelled since the claim
                self._give_back([tag])
                continue
            if queue in self._no_ack_queues:
                self._ack(tag)
            else:
                self.inflight.handed_out(tag)
            self.connection._deliver(payload, queue)
            return True
        return False

    def _give_back_buffered(self, drop: Callable[[str], bool]) -> None:
        keep, tags = deque(), []
        for queue, payload in self._buffer:
            if drop(queue):
                tags.append(payload["properties"]["delivery_tag"])
            else:
                keep.append((queue, payload))
        self._buffer = keep
        if tags:
            self._give_back(tags)

    def _get(self, queue: str, timeout: float | None = None) -> dict[str, Any]:
        """basic_get: claim one message of ``queue``."""
        keys.check_queue_name(queue)
        with self.conn_or_acquire() as client:
            self._maybe_sweep(client)
            while True:
                result, accepted = self._claim(client, [queue], 1, block=False)
                if accepted:
                    self._maybe_update_queues_expire(client, queue)
                    return accepted[0][1]
                if not result.messages:
                    raise Empty()

    # -- acks, rejects, restores ---------------------------------------------

    def _ack(self, tag: str) -> None:
        inflight = self._inflight
        if inflight is None:
            return
        if inflight.ack(tag) >= self.options.ack_batch or self._in_poll:
            self._flush_acks()

    def _flush_acks(self) -> None:
        if self._inflight is not None:
            with self.conn_or_acquire() as client:
                self._inflight.flush_acks(client)

    def _maybe_flush_acks(self) -> None:
        inflight = self._inflight
        since = inflight.acks_waiting_since() if inflight is not None else None
        if since is not None and time.monotonic() - since >= self.options.ack_interval:
            self._flush_acks()

    def _give_back(self, tags: list[str]) -> None:
        if self._inflight is not None and tags:
            with self.conn_or_acquire() as client:
                self._inflight.give_back(client, tags)

    def _maybe_sweep(self, client: Any = None) -> None:
        """Sweep dead owners' messages back, at most every ``sweep_interval`` seconds."""
        now = time.monotonic()
        if now - self._swept_at < self.options.sweep_interval:
            return
        self._swept_at = now
        lock_ms = max(1, int(self.options.sweep_interval * 1000))
        with self.conn_or_acquire(client) as conn:
            sweep_dead_owners(conn, self.sep, lock_ms)

    # -- kombu channel API ------------------------------------------------------

    def basic_consume(self, queue: str, no_ack: bool, *args: Any, **kwargs: Any) -> Any:
        if no_ack:
            self._no_ack_queues.add(queue)
        else:
            self._no_ack_queues.discard(queue)
        return super().basic_consume(queue, no_ack, *args, **kwargs)

    def _basic_cancel(self, consumer_tag: str) -> Any:
        queue = self._tag_to_queue.get(consumer_tag)
        result = super()._basic_cancel(consumer_tag)
        if queue is not None and queue not in self._active_queues:
            self._no_ack_queues.discard(queue)
            self._give_back_buffered(lambda q: q == queue)
        return result

    def basic_get(self, queue: str, no_ack: bool = False, **kwargs: Any) -> Any:
        message = super().basic_get(queue, no_ack=no_ack, **kwargs)
        if message is not None:
            if no_ack:
                self._ack(message.delivery_tag)
            else:
                self.inflight.handed_out(message.delivery_tag)
        return message

    def _put(self, queue: str, message: dict[str, Any], **kwargs: Any) -> None:
        """Publish to the queue's priority band and wake its consumers, or delay it."""
        batch = kwargs.pop("_publish_batch", None)
        keys.check_queue_name(queue)
        list_key = self._q_for_pri(queue, self._get_message_priority(message, reverse=False))
        waiting = keys.waiting(queue)
        data = dumps(message)
        eta = far_eta(message, self.options.eta_horizon)
        expires = self._expires.get(queue)
        if batch is not None:
            if eta is not None:
                scripts.schedule.add_to_batch(
                    batch, *delayed.schedule_args(eta, list_key, waiting, data)
                )
                return
            scripts.publish.add_to_batch(batch, [list_key, waiting], [data])
            for key in self._expiring_keys(queue) if expires else ():
                batch.add("pexpire", key, expires)
            return
        with self.conn_or_acquire() as client:
            if eta is not None:
                scripts.schedule(client, *delayed.schedule_args(eta, list_key, waiting, data))
            else:
                scripts.publish(client, [list_key, waiting], [data])
                for key in self._expiring_keys(queue) if expires else ():
                    client.pexpire(key, expires)

    def _expiring_keys(self, queue: str) -> list[str]:
        return [self._q_for_pri(queue, band) for band in self.priority_steps] + [keys.waiting(queue)]

    def _delete(self, queue: str, *args: Any, **kwargs: Any) -> None:
        super()._delete(queue, *args, **kwargs)
        with self.conn_or_acquire(client=kwargs.get("client")) as client:
            client.delete(keys.waiting(queue))

    def close(self) -> None:
        if not self.closed:
            self._closing = True
            if self._in_poll:  # a blocking BLPOP is pending: drop it (its inbox is released below)
                self._in_poll = None
                self.client.connection.disconnect()
            self._release_inflight()
        super().close()

    # -- delayed store (DESIGN D4) ----------------------------------------------

    @property
    def delayed_store(self) -> DelayedStore:
        return DelayedStore(self._sync_client(), self.sep)

    def schedule_count(self) -> int:
        """How many messages wait in the delayed store."""
        return self.delayed_store.count()

    def list_scheduled(self, start: int = 0, count: int = 100) -> list[ScheduledMessage]:
        """Delayed messages in ETA order."""
        return self.delayed_store.list(start, count)

    def remove_scheduled(self, task_id: str) -> int:
        """Remove the delayed messages of ``task_id`` (revoke); return how many."""
        return self.delayed_store.remove(task_id)
