"""Writing task messages to our Redis transport's queues without kombu's per-message work.

What a :class:`RedisWriter` writes is byte for byte what the transport's channel
``_put`` writes (``messaging/redis/channel.py``): kombu's JSON envelope, pushed with
the transport's publish script onto the list of the message's priority band, which
hands the message to a consumer waiting on the queue when there is one.  The writer only skips the work that is the same
from one message to the next: it holds one client connection, keeps the list and
waiting-list key of each (queue, priority), and pipelines a batch in one round trip.

A single message is written to the connection's socket as one RESP command whose
head (script, keys) is prepared once, and its one-line reply is read back
directly: redis-py's general command path costs about as much CPU as the round trip
itself.  Health checks, connecting and anything unexpected go through redis-py.

Messages with an ``eta`` header, and queues declared with an expiry, are left to the
channel's ``_put``: see :meth:`RedisWriter.takes`.
"""

from __future__ import annotations

import time
from typing import Any

from redis.exceptions import ConnectionError, NoScriptError, ResponseError

from ..message import json_dumps
from .redis import keys
from .redis.scripts import publish


class RedisWriter:
    """Publishes envelopes through one connection of a Redis channel's pool."""

    def __init__(self, channel: Any) -> None:
        self.channel = channel
        self._connection: Any = None
        self._script_loaded = False
        self._keys: dict[tuple[str, Any], tuple[str, str]] = {}
        self._heads: dict[tuple[str, str], bytes] = {}  # RESP command head per key pair

    def takes(self, message: dict[str, Any], queue: str) -> bool:
        """True unless the channel's own ``_put`` must run (an ETA, an expiring queue)."""
        if message["headers"].get("eta"):
            return False
        expires = getattr(self.channel, "_expires", None)
        return not (expires and queue in expires)

    def args(self, message: dict[str, Any], queue: str) -> tuple[str, str, str]:
        """``(list key, waiting-list key, payload)`` for the publish script."""
        priority = message["properties"].get("priority")
        found = self._keys.get((queue, priority))
        if found is None:
            keys.check_queue_name(queue)
            channel = self.channel
            band = channel._get_message_priority(message, reverse=False)
            found = self._keys[(queue, priority)] = (
                channel._q_for_pri(queue, band),
                keys.waiting(queue),
            )
        return found[0], found[1], json_dumps(message)

    def publish_one(self, args: tuple[str, str, str]) -> None:
        connection = self._connection or self._connect()
        sock = getattr(connection, "_sock", None)
        interval = getattr(connection, "health_check_interval", 0)
        now = time.monotonic()
        if sock is None or (interval and now > getattr(connection, "next_health_check", 0)):
            self._publish_via_client(connection, args)  # connects, or pings first
            return
        head = self._heads.get((args[0], args[1]))
        if head is None:
            head = self._heads[(args[0], args[1])] = _head(args[0], args[1])
        payload = args[2].encode()
        try:
            sock.sendall(b"".join((head, b"$%d\r\n" % len(payload), payload, b"\r\n")))
            reply = sock.recv(4096)
            while not reply.endswith(b"\r\n"):
                more = sock.recv(4096)
                if not more:
                    raise ConnectionError("Connection closed by the Redis server.")
                reply += more
        except OSError as exc:
            connection.disconnect()
            raise ConnectionError(f"Error while publishing to Redis: {exc}") from exc
        except ConnectionError:
            connection.disconnect()
            raise
        if interval:
            connection.next_health_check = now + interval
        if reply in _PUBLISHED:
            return
        if reply.startswith(b"-NOSCRIPT"):  # the server forgot the script (restart, SCRIPT FLUSH)
            self._load_script()
            self._publish_via_client(connection, args)
        elif reply.startswith(b"-"):
            raise ResponseError(reply[1:-2].decode(errors="replace"))
        else:  # not the script's reply: do not trust what may follow on this connection
            connection.disconnect()
            raise ConnectionError(f"Unexpected reply from Redis to a publish: {reply[:60]!r}")

    def _publish_via_client(self, connection: Any, args: tuple[str, str, str]) -> None:
        connection.send_command("EVALSHA", publish.sha, 2, *args)
        try:
            connection.read_response()
        except NoScriptError:
            self._load_script()
            connection.send_command("EVALSHA", publish.sha, 2, *args)
            connection.read_response()

    def publish(self, batch: list[tuple[str, str, str]]) -> None:
        """Run the publish script for each ``(list, waiting, payload)``, in one round trip."""
        if len(batch) <= 1:
            if batch:
                self.publish_one(batch[0])
            return
        connection = self._connection or self._connect()
        if not self._script_loaded:
            self._load_script()
        commands = [("EVALSHA", publish.sha, 2, *args) for args in batch]
        connection.send_packed_command(connection.pack_commands(commands))
        missing, failed = [], None
        for args in batch:  # read every reply, so the connection stays in step
            try:
                connection.read_response()
            except NoScriptError:
                missing.append(args)
            except ResponseError as exc:
                failed = failed or exc
        if failed is not None:
            raise failed
        if missing:
            self._load_script()
            self.publish(missing)

    def _load_script(self) -> None:
        connection = self._connection or self._connect()
        connection.send_command("SCRIPT", "LOAD", publish.source)
        connection.read_response()
        self._script_loaded = True

    def _connect(self) -> Any:
        """A connection of our own, built like the channel pool's, speaking RESP2.

        RESP2 has no server-pushed frames, so a publish's reply is always exactly one
        integer or one error line.
        """
        pool = self.channel.pool
        options = {
            k: v for k, v in pool.connection_kwargs.items() if "maint_notifications" not in k
        }
        options["protocol"] = 2  # (redis-py's maintenance notifications need RESP3: left out)
        connection = pool.connection_class(**options)
        connection.connect()
        self._connection = connection
        return connection

    def close(self) -> None:
        connection, self._connection = self._connection, None
        self._script_loaded = False
        if connection is not None:
            connection.disconnect()


#: the publish script's replies in RESP2: 1 (handed to a waiting consumer) or 0 (queued)
_PUBLISHED = (b":1\r\n", b":0\r\n")


def _bulk(text: str) -> bytes:
    data = text.encode()
    return b"$%d\r\n%s\r\n" % (len(data), data)


def _head(list_key: str, waiting: str) -> bytes:
    """``EVALSHA <publish> 2 <list> <waiting>``, all but the payload, in RESP."""
    return (
        b"*6\r\n"
        + _bulk("EVALSHA")
        + _bulk(publish.sha)
        + _bulk("2")
        + _bulk(list_key)
        + _bulk(waiting)
    )
