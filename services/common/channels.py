"""One factory for outbound gRPC channels: options, retry policy, keepalive.

Retries are declared in the service config and only for UNAVAILABLE; every call still
carries its own deadline from the caller's budget.
"""

from __future__ import annotations

import json

import grpc

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
]


def channel(address: str) -> grpc.aio.Channel:
    """An insecure channel to ``host:port`` (TLS terminates at the mesh in cluster mode)."""
    return grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
