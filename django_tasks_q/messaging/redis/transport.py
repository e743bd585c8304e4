"""The kombu transports: ``redis://``, ``rediss://`` (TLS) and ``sentinel://``."""

from __future__ import annotations

import ssl
from queue import Empty
from typing import Any

from kombu.transport import redis as kombu_redis

from .channel import Channel

#: Messages handed out per event-loop tick at most, so timers still run.
HUB_DELIVERIES_PER_TICK = 1000


class Poller(kombu_redis.MultiChannelPoller):
    """kombu's multi-channel poller, plus delivery from the channels' claim buffers.

    A claim returns a batch; the messages are handed out one per ``get`` (one per
    ``drain_events``) before the socket is polled again.
    """

    #: set when a kombu event loop (hub) drives us instead of drain_events
    hub_mode = False

    def _deliver_buffered(self) -> bool:
        for channel in list(self._channels):
            channel._maybe_flush_acks()
            if channel._deliver_buffered():
                return True
        return False

    def on_poll_start(self) -> None:
        super().on_poll_start()
        if not self.hub_mode:
            return
        # An event loop calls no get(): deliver what prefetch credit allows now,
        # claiming again whenever a buffer runs dry, until a channel is out of
        # credit or blocks on Redis (whose reply then wakes the loop).
        for _ in range(HUB_DELIVERIES_PER_TICK):
            if not self._deliver_buffered():
                return
            if not any(channel._buffer for channel in self._channels):
                super().on_poll_start()

    def get(self, callback: Any, timeout: float | None = None) -> None:
        self._in_protected_read = True
        try:
            if self._deliver_buffered():
                return
            self.maybe_refresh_binding_expiry()
            self.on_poll_start()  # claims, or starts a blocking read
            if self._deliver_buffered():
                return
            events = self.poller.poll(timeout)
            for fileno, event in events or ():
                if self.handle_event(fileno, event):
                    return
            if not events:
                self.maybe_check_brpop_health()
            self.maybe_restore_messages()
            raise Empty()
        finally:
            self._in_protected_read = False
            while self.after_read:
                try:
                    self.after_read.pop()()
                except KeyError:
                    break


class Transport(kombu_redis.Transport):
    """``redis://``: kombu's Redis transport with atomic claims (DESIGN D3, D4)."""

    Channel = Channel

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.cycle = Poller()
        # kombu sleeps polling_interval after an empty poll; we block on Redis instead.
        self.polling_interval = None

    def register_with_event_loop(self, connection: Any, loop: Any) -> None:
        self.cycle.hub_mode = True
        super().register_with_event_loop(connection, loop)


class SecureTransport(Transport):
    """``rediss://``: TLS, verifying the server certificate unless the URL says otherwise.

    ``rediss://host:6380/0?ssl_cert_reqs=required&ssl_ca_certs=/path/ca.pem`` sets the
    TLS options (kombu's ``ssl_*`` query parameters); without any, certificates are
    checked against the system's trusted CAs (kombu's own default does not check).
    """

    def __init__(self, client: Any, **kwargs: Any) -> None:
        if not client.ssl:
            client.ssl = {"ssl_cert_reqs": ssl.CERT_REQUIRED}
        super().__init__(client, **kwargs)


class SentinelChannel(Channel, kombu_redis.SentinelChannel):
    """Our channel with kombu's Sentinel master discovery."""

    from_transport_options = Channel.from_transport_options + (
        "master_name",
        "min_other_sentinels",
        "sentinel_kwargs",
        "sentinel_fanout_compat",
    )


class SentinelTransport(Transport):
    """``sentinel://``: needs the ``master_name`` transport option."""

    Channel = SentinelChannel
    default_port = 26379
