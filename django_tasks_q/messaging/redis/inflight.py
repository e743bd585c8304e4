"""One owner's in-flight messages: atomic claims, batched acks, restores, sweeps.

Plain redis-py, no kombu: :mod:`.channel` adapts this to kombu's channel API.
Each consumer channel is one *owner*.  A claim moves messages from the ready
lists into ``tasks_q:inflight:<owner>`` in the same script that pops them, so a
message is always in exactly one place: a ready list, an in-flight hash or the
delayed store.  Only a dead owner's messages (no heartbeat key) are swept back.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from . import keys, scripts
from .payload import after_delivery

logger = logging.getLogger("django_tasks_q.messaging.redis")

#: Largest claim per round trip (keeps Lua's unpack() within its limits).
MAX_CLAIM = 1000
#: Messages per restore script call.
RESTORE_CHUNK = 200


def new_owner_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


@dataclass(frozen=True)
class Claimed:
    """A message moved into the in-flight hash: its tag, source list and payload bytes."""

    tag: str
    list_key: str
    raw: bytes


@dataclass(frozen=True)
class ClaimResult:
    messages: list[Claimed]
    #: server time of the claim and ETA of the next delayed message, if any
    now: float
    next_eta: float | None


class InFlight:
    """Bookkeeping of one owner.  Thread-safe: acks may come from any thread."""

    def __init__(self, heartbeat_ttl: float, sep: str) -> None:
        self.owner = new_owner_id()
        self.sep = sep
        self.key = keys.inflight(self.owner)
        self.heartbeat_key = keys.heartbeat(self.owner)
        self.inbox_key = keys.inbox(self.owner)
        self.registry_key = keys.idle_registry(self.owner)
        self.ttl_ms = int(heartbeat_ttl * 1000)
        self._seq = 1
        self._claimed: dict[str, Claimed] = {}
        self._handed_out: set[str] = set()
        self._acks: list[str] = []
        self._acks_since = 0.0
        self._lock = threading.RLock()
        #: set when a claim failed midway: our hash may hold tags we never saw
        self.suspect = False
        self.beaten = False
        #: set by :meth:`release`; a beat never follows it (it would revive the owner)
        self.released = False
        self._beat_lock = threading.Lock()

    # -- claiming ---------------------------------------------------------------

    def claim(
        self,
        client: Any,
        lists: Sequence[str],
        waiting: Sequence[str],
        limit: int,
        move_limit: int,
    ) -> ClaimResult:
        """Claim up to ``limit`` messages in one round trip: handed ones, then ``lists`` in order.

        With ``waiting`` (the queues' waiting lists) and nothing to claim, the owner
        is registered as waiting on each: the next publish is handed to its inbox.
        """
        limit = max(1, min(limit, MAX_CLAIM))
        with self._lock:
            if self.suspect:
                self._reconcile(client)
            acks, self._acks = self._acks, []
            first = self._seq
            self._seq += limit  # never reuse a tag, even if this call fails midway
            try:
                out, next_eta, now = scripts.claim(
                    client,
                    [self.key, keys.OWNERS, self.heartbeat_key, keys.DELAYED, keys.DELAYED_MESSAGES,
                     self.inbox_key, *lists, *waiting],
                    [self.owner, self.ttl_ms, limit, first, len(lists), move_limit, len(acks),
                     self.registry_key, "1" if waiting else "0", *acks],
                )  # fmt: skip
            except BaseException:
                self._acks[:0] = acks
                self.suspect = True
                raise
            claimed = []
            for n in range(0, len(out), 3):
                item = Claimed(out[n].decode(), out[n + 1].decode(), out[n + 2])
                self._claimed[item.tag] = item
                claimed.append(item)
        return ClaimResult(claimed, float(now), float(next_eta) if next_eta else None)

    def adopt(self, handed: bytes) -> Claimed | None:
        """A message a publisher handed to our inbox (``tag\\nlist\\npayload``), now ours to deliver.

        None for a poke (an empty item: claim instead) or a malformed item.
        """
        tag, _, rest = handed.partition(b"\n")
        list_key, sep, raw = rest.partition(b"\n")
        if not sep:
            return None
        item = Claimed(tag.decode(), list_key.decode(), raw)
        with self._lock:
            self._claimed[item.tag] = item
        return item

    def handed_out(self, tag: str) -> None:
        """``tag`` was given to kombu: giving it back now counts a delivery."""
        with self._lock:
            if tag in self._claimed:
                self._handed_out.add(tag)

    # -- acks ---------------------------------------------------------------------

    def ack(self, tag: str) -> int:
        """Queue an ack (or a drop); return how many acks are waiting."""
        with self._lock:
            if self._claimed.pop(tag, None) is None:
                return len(self._acks)
            self._handed_out.discard(tag)
            if not self._acks:
                self._acks_since = time.monotonic()
            self._acks.append(tag)
            return len(self._acks)

    def acks_waiting_since(self) -> float | None:
        return self._acks_since if self._acks else None

    def flush_acks(self, client: Any) -> None:
        with self._lock:
            if not self._acks:
                return
            acks, self._acks = self._acks, []
            try:
                client.hdel(self.key, *acks)
            except BaseException:
                self._acks[:0] = acks
                raise

    # -- giving messages back -------------------------------------------------

    def give_back(self, client: Any, tags: Iterable[str]) -> int:
        """Put claimed messages back at the head of their queues (in claim order)."""
        with self._lock:
            items = [self._claimed.pop(tag) for tag in tags if tag in self._claimed]
            return self._restore(client, "own", items)

    def release(self, client: Any) -> int:
        """Closing: flush acks and give back everything our hash holds, then forget us."""
        with self._beat_lock:  # a beat under way finishes first; none starts after
            self.released = True
        with self._lock:
            self.flush_acks(client)
            stored = client.hgetall(self.key)
            items = [
                self._claimed.get(tag.decode()) or _from_hash(tag, value)
                for tag, value in stored.items()
            ]
            self._claimed.clear()
            return self._restore(client, "release", items)

    def forget(self, tags: Iterable[str]) -> None:
        """Drop local records of ``tags`` (they were moved elsewhere atomically)."""
        with self._lock:
            for tag in tags:
                self._claimed.pop(tag, None)
                self._handed_out.discard(tag)

    def _restore(self, client: Any, mode: str, items: list[Claimed]) -> int:
        delivered = set(self._handed_out)
        self._handed_out.difference_update(item.tag for item in items)
        return restore(client, mode, self.owner, items, self.sep, bump=delivered.__contains__)

    def _reconcile(self, client: Any) -> None:
        """After a failed claim: give back tags in our hash that we never received."""
        self.flush_acks(client)
        stored = client.hgetall(self.key)
        orphans = [
            _from_hash(tag, value)
            for tag, value in stored.items()
            if tag.decode() not in self._claimed
        ]
        if orphans:
            logger.warning("Giving back %d message(s) claimed by a failed call", len(orphans))
            self._restore(client, "own", orphans)
        self.suspect = False

    # -- liveness -------------------------------------------------------------

    def beat(self, client: Any) -> None:
        """Refresh our heartbeat; warn if it had expired (we were taken for dead)."""
        with self._beat_lock:
            if self.released:
                return
            with client.pipeline(transaction=False) as pipe:
                pipe.set(self.heartbeat_key, self.owner, px=self.ttl_ms, get=True)
                pipe.sadd(keys.OWNERS, self.owner)
                previous, _ = pipe.execute()
        if previous is None and self.beaten:
            logger.warning(
                "Heartbeat of Redis consumer %s had expired: its in-flight messages may "
                "have been redelivered to other consumers.",
                self.owner,
            )
        self.beaten = True


def _from_hash(tag: bytes, value: bytes) -> Claimed:
    list_key, _, raw = value.partition(b"\n")
    return Claimed(tag.decode(), list_key.decode(), raw)


def sweep_dead_owners(client: Any, sep: str, lock_ms: int) -> int:
    """Give dead owners' messages back to their queues; return how many moved.

    Any consumer may call this; the lock key lets one sweep run per ``lock_ms``.
    """
    if not client.set(keys.SWEEP_LOCK, "1", nx=True, px=lock_ms):
        return 0
    owners = [owner.decode() for owner in client.smembers(keys.OWNERS)]
    if not owners:
        return 0
    with client.pipeline(transaction=False) as pipe:
        for owner in owners:
            pipe.exists(keys.heartbeat(owner))
        alive = pipe.execute()
    moved = 0
    for owner, is_alive in zip(owners, alive, strict=True):
        if is_alive:
            continue
        stored = client.hgetall(keys.inflight(owner))
        items = [_from_hash(tag, value) for tag, value in stored.items()]
        restored = restore(client, "sweep", owner, items, sep, bump=lambda tag: True)
        if restored > 0:
            logger.warning(
                "Redelivering %d message(s) of Redis consumer %s: its heartbeat expired.",
                restored,
                owner,
            )
            moved += restored
    return moved


def _tag_order(item: Claimed) -> int:
    return int(item.tag) if item.tag.isdigit() else 0


def restore(
    client: Any,
    mode: str,
    owner: str,
    items: list[Claimed],
    sep: str,
    bump: Callable[[str], bool],
) -> int:
    """Run :data:`scripts.RESTORE` over ``items`` in chunks; return how many moved.

    Messages go back to the head of their lists in claim order.  ``bump(tag)``
    says whether the message was delivered (its delivery count then grows).
    A 'sweep' stops at the first chunk that finds the owner alive again.
    """
    items = sorted(items, key=_tag_order)
    chunks = [items[i : i + RESTORE_CHUNK] for i in range(0, len(items), RESTORE_CHUNK)] or [[]]
    moved = 0
    # RPUSH puts each message at the head: push the last claimed first.
    for chunk in reversed(chunks):
        args: list[Any] = [mode, owner]
        for item in reversed(chunk):
            raw = after_delivery(item.raw) if bump(item.tag) else item.raw
            args += [item.tag, item.list_key, keys.waiting(keys.queue_of(item.list_key, sep)), raw]
        result = scripts.restore(
            client, [keys.inflight(owner), keys.heartbeat(owner), keys.OWNERS], args
        )
        if result < 0:
            break
        moved += result
    return moved
