"""The server chain every process shares: request id from metadata into the logging context,
calls counted and timed per method and status code; the client chain puts the id on calls."""

from __future__ import annotations

import grpc
import pytest

from services.common import telemetry
from services.common.logging import request_id
from services.common.telemetry import GRPC_HANDLED, GRPC_SECONDS, ObservingInterceptor, client_interceptors

SEEN: list[str] = []
LEFT: list[float | None] = []


async def _echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    SEEN.append(request_id.get())
    LEFT.append(telemetry.remaining())
    if request == b"missing":
        await context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")
    if request == b"crash":
        raise RuntimeError("boom")
    return request


def _value(metric: object, *labels: str) -> float:
    return metric.labels(*labels)._value.get()  # type: ignore[attr-defined]


async def test_the_chain_counts_codes_and_carries_the_request_id() -> None:
    server = grpc.aio.server(interceptors=[ObservingInterceptor("unit")])
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
        "test.Echo", {"Say": grpc.unary_unary_rpc_method_handler(_echo)})])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    before = {code: _value(GRPC_HANDLED, "unit", "Say", code) for code in ("OK", "NOT_FOUND", "UNKNOWN")}
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", interceptors=client_interceptors()) as ch:
            say = ch.unary_unary("/test.Echo/Say")
            token = request_id.set("rid-123")
            try:
                assert await say(b"hello", timeout=5) == b"hello"
                for payload, code in ((b"missing", grpc.StatusCode.NOT_FOUND), (b"crash", grpc.StatusCode.UNKNOWN)):
                    with pytest.raises(grpc.aio.AioRpcError) as err:
                        await say(payload, timeout=5)
                    assert err.value.code() == code
            finally:
                request_id.reset(token)
            assert await say(b"no id") == b"no id"  # and no deadline
    finally:
        await server.stop(0)
    assert SEEN[-4:] == ["rid-123", "rid-123", "rid-123", ""]
    assert all(left is not None and 0 < left <= 5.5 for left in LEFT[-4:-1]) and LEFT[-1] is None, LEFT
    assert telemetry.remaining() is None  # reset after the call
    assert _value(GRPC_HANDLED, "unit", "Say", "OK") - before["OK"] == 2
    assert _value(GRPC_HANDLED, "unit", "Say", "NOT_FOUND") - before["NOT_FOUND"] == 1
    assert _value(GRPC_HANDLED, "unit", "Say", "UNKNOWN") - before["UNKNOWN"] == 1
    assert GRPC_SECONDS.labels("unit", "Say")._sum.get() > 0  # type: ignore[attr-defined]


@pytest.mark.parametrize(("env", "on"), [
    ({}, False),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}, True),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4317"}, True),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317", "OTEL_SDK_DISABLED": "true"}, False),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317", "OTEL_TRACES_EXPORTER": "none"}, False),
    ({"OTEL_TRACES_EXPORTER": "otlp"}, True),
])
def test_tracing_follows_the_standard_variables(env: dict[str, str], on: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_SDK_DISABLED",
                 "OTEL_TRACES_EXPORTER"):
        monkeypatch.delenv(name, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert telemetry.tracing_enabled() is on
    # Off, no tracing interceptor joins the chains.
    if not on:
        assert [type(i).__name__ for i in client_interceptors()] == ["ContextClientInterceptor"]
        assert [type(i).__name__ for i in telemetry.server_interceptors("unit")] == ["ObservingInterceptor"]


def test_metric_names_follow_prometheus_conventions() -> None:
    for name, labels in telemetry.METRICS.items():
        assert name.startswith("quarry_")
        assert not name.endswith("_total") or name.count("_total") == 1
        assert not any(unit in name for unit in ("_ms", "_milliseconds", "_kb", "_mb")), name
        assert "index" not in labels or name == "quarry_index_chunks"  # per-index labels stay off hot paths
