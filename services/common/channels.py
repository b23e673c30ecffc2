"""One factory for outbound gRPC channels: options, retry policy, keepalive, service credentials.

Retries are declared in the service config and only for UNAVAILABLE; every call still carries
its own deadline from the caller's budget. ``Channels`` holds a process's channels (one per
address) and hands out stubs that follow a rebuild: when the process's mTLS files change (a
rotated Secret), new channels are built with the new certificate and the old ones are closed
after a grace period, since gRPC Python cannot reload a client certificate in place.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Sequence
from typing import Any, TypeVar

import grpc

from services.common.security import ClientCredentials, ServiceAuth, client_credentials, tls_fingerprint
from services.common.telemetry import client_interceptors

log = logging.getLogger(__name__)

_SERVICE_CONFIG = json.dumps(
    {
        "loadBalancingConfig": [{"round_robin": {}}],
        "methodConfig": [
            {
                "name": [{}],
                "retryPolicy": {
                    "maxAttempts": 3,
                    "initialBackoff": "0.05s",
                    "maxBackoff": "0.5s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
    }
)

CHANNEL_OPTIONS = [
    ("grpc.service_config", _SERVICE_CONFIG),
    # With a headless Service the name resolves to every pod: spread calls over all of them
    # (servers cap connection age, so pods the autoscaler adds are picked up on reconnect).
    ("grpc.lb_policy_name", "round_robin"),
    ("grpc.enable_retries", 1),
    ("grpc.max_receive_message_length", 256 * 1024 * 1024),
    ("grpc.max_send_message_length", 256 * 1024 * 1024),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    # A restarted backend is found again within a second (gRPC's default backoff grows to 120 s).
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1_000),
]

#: Old channels stay open this long after a rebuild, so calls in flight on them finish.
RETIRE_GRACE_SECONDS = 60.0

_S = TypeVar("_S")


def _build(address: str, creds: ClientCredentials,
           extra: Sequence[grpc.aio.ClientInterceptor] = ()) -> grpc.aio.Channel:
    options = list(CHANNEL_OPTIONS)
    interceptors = [*creds.interceptors, *client_interceptors(), *extra]
    if creds.channel_credentials is None:
        return grpc.aio.insecure_channel(address, options=options, interceptors=interceptors)
    if creds.server_name:
        options.append(("grpc.ssl_target_name_override", creds.server_name))
    return grpc.aio.secure_channel(address, creds.channel_credentials, options=options, interceptors=interceptors)


def channel(address: str, auth: ServiceAuth) -> grpc.aio.Channel:
    """One channel to ``host:port`` carrying ``auth``'s credential (mTLS and/or the token)."""
    return _build(address, client_credentials(auth))


class Channels:
    """The outbound channels of one process, one per address, rebuilt when its TLS files change."""

    def __init__(self, auth: ServiceAuth, *, grace: float = RETIRE_GRACE_SECONDS) -> None:
        self._auth = auth
        self._grace = grace
        self._creds = client_credentials(auth)
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._extra: dict[str, tuple[grpc.aio.ClientInterceptor, ...]] = {}
        self._retired: list[grpc.aio.Channel] = []
        self._closers: set[asyncio.Task[None]] = set()
        self.generation = 0
        self._checked = time.monotonic()

    def channel(self, address: str) -> grpc.aio.Channel:
        """The current channel to ``address`` (built on first use)."""
        self._maybe_rebuild()
        if address not in self._channels:
            self._channels[address] = _build(address, self._creds, self._extra.get(address, ()))
        return self._channels[address]

    def intercept(self, address: str, *interceptors: grpc.aio.ClientInterceptor) -> None:
        """Put ``interceptors`` on the channel to ``address`` (before its first use), after the credentials."""
        if address in self._channels:
            raise RuntimeError(f"the channel to {address} is already built")
        self._extra[address] = (*self._extra.get(address, ()), *interceptors)

    def stub(self, stub_class: type[_S], address: str) -> _S:
        """A stub of ``stub_class`` on ``address`` that moves to the new channel after a rebuild."""
        return _FollowingStub(self, stub_class, address)  # type: ignore[return-value]

    def _maybe_rebuild(self) -> None:
        if not self._auth.tls or time.monotonic() - self._checked < self._auth.reload_seconds:
            return
        self._checked = time.monotonic()
        fingerprint = tls_fingerprint(self._auth)
        if fingerprint and fingerprint != self._creds.fingerprint:
            self.rebuild()

    def rebuild(self) -> None:
        """New credentials from the files, new channels from now on; the old ones close after the grace."""
        self._creds = client_credentials(self._auth)
        retired, self._channels = list(self._channels.values()), {}
        self.generation += 1
        log.info("service certificate files changed: rebuilt %d channel(s)", len(retired))
        with contextlib.suppress(RuntimeError):  # no running loop: close() handles them
            loop = asyncio.get_running_loop()
            task = loop.create_task(self._close_later(retired))
            self._closers.add(task)
            task.add_done_callback(self._closers.discard)
            return
        self._retired.extend(retired)

    async def _close_later(self, channels: list[grpc.aio.Channel]) -> None:
        await asyncio.sleep(self._grace)
        await asyncio.gather(*(c.close() for c in channels), return_exceptions=True)

    def all(self) -> dict[str, grpc.aio.Channel]:
        """The current channels by address."""
        return dict(self._channels)

    async def close(self) -> None:
        for task in list(self._closers):
            task.cancel()
        await asyncio.gather(*(c.close() for c in [*self._channels.values(), *self._retired]),
                             return_exceptions=True)
        self._channels, self._retired = {}, []


class _FollowingStub:
    """Forwards every attribute to a stub on the current channel of ``channels``."""

    def __init__(self, channels: Channels, stub_class: type[Any], address: str) -> None:
        self._channels = channels
        self._class = stub_class
        self._address = address
        self._generation = -1
        self._stub: Any = None

    def __getattr__(self, name: str) -> Any:
        ch = self._channels.channel(self._address)
        if self._stub is None or self._generation != self._channels.generation:
            self._stub = self._class(ch)
            self._generation = self._channels.generation
        return getattr(self._stub, name)
