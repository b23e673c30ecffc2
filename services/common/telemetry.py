"""Metrics, request ids and traces, the same in every process.

- Metrics: Prometheus (``prometheus_client``'s default registry, with its process and GC
  collectors). The gRPC services serve them on ``metrics_port`` (``QUARRY_<PROCESS>_METRICS_PORT``),
  the gateway at ``/metrics`` on its HTTP port. Every name is declared here, once, so the
  dashboard and alert rules in ``deploy/`` can be checked against this module (``METRICS``).
- Request ids: the gateway's ``x-request-id`` travels as gRPC metadata on every outbound call
  (``ContextClientInterceptor``) and is put back into the logging context by the server chain.
- Traces: OpenTelemetry, configured only when the standard ``OTEL_*`` variables ask for an
  exporter (``tracing_enabled``); otherwise nothing is instrumented and tracing costs nothing.
  W3C trace context travels in gRPC metadata and HTTP headers.
"""

from __future__ import annotations

import contextvars
import logging
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc
from prometheus_client import Counter, Gauge, Histogram, start_http_server

from services.common.logging import request_id

log = logging.getLogger(__name__)

REQUEST_ID_KEY = "x-request-id"

#: The caller's deadline of the call being served (``time.monotonic()`` seconds; None: none set),
#: set by the server chain so that any code a servicer calls can bound its own work.
call_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("call_deadline", default=None)


def remaining() -> float | None:
    """Seconds left before the caller's deadline (never below 0), or None without one."""
    deadline = call_deadline.get()
    return None if deadline is None else max(0.0, deadline - time.monotonic())

# Seconds: from sub-millisecond engine calls to multi-second cold reranks and parses.
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

# -- the metrics ------------------------------------------------------------------------------

#: ``QUARRY_METRICS_ENABLED=false`` leaves every metric a no-op (for overhead measurements, or
#: where nothing scrapes); ``/metrics`` then serves only the process collectors.
METRICS_ENABLED = os.environ.get("QUARRY_METRICS_ENABLED", "true").strip().lower() not in ("0", "false", "off", "no")

#: Every metric Quarry exports, by the name a query uses (a counter's with ``_total``, a
#: histogram's without its ``_bucket``/``_count``/``_sum``), with its label names.
METRICS: dict[str, tuple[str, ...]] = {}


class _Off:
    """A metric that records nothing."""

    def labels(self, *values: str) -> _Off:
        return self

    def inc(self, amount: float = 1) -> None: ...

    def set(self, value: float) -> None: ...

    def observe(self, value: float) -> None: ...

    def remove(self, *values: str) -> None: ...

    def collect(self) -> list[Any]:
        return []


def _metric(kind: type[Any], name: str, documentation: str, labels: Sequence[str] = (), **kwargs: Any) -> Any:
    METRICS[name + ("_total" if kind is Counter else "")] = tuple(labels)
    return kind(name, documentation, list(labels), **kwargs) if METRICS_ENABLED else _Off()


GRPC_HANDLED = _metric(Counter, "quarry_grpc_server_handled", "gRPC calls handled, by method and status code",
                       ["process", "method", "code"])
GRPC_SECONDS = _metric(Histogram, "quarry_grpc_server_handling_seconds", "gRPC handling time, by method",
                       ["process", "method"], buckets=_BUCKETS)
HTTP_REQUESTS = _metric(Counter, "quarry_http_requests", "HTTP requests, by route template, method and status",
                        ["route", "method", "status"])
HTTP_SECONDS = _metric(Histogram, "quarry_http_request_duration_seconds", "HTTP request time, by route template",
                       ["route", "method"], buckets=_BUCKETS)
RETRIEVE_STAGE_SECONDS = _metric(Histogram, "quarry_retrieve_stage_seconds",
                                 "Retrieve time per stage (embed, dense, sparse, fusion, rerank, catalog)",
                                 ["stage"], buckets=_BUCKETS)
DEGRADED = _metric(Counter, "quarry_degraded_answers", "Answers served without a part of the pipeline, by reason",
                   ["reason"])
CACHE_REQUESTS = _metric(Counter, "quarry_cache_requests",
                         "Gateway cache look-ups, by cache and result (hit, miss)", ["cache", "result"])
RERANK_PASSAGES = _metric(Counter, "quarry_rerank_passages", "Passages scored by the reranker", ["backend"])
RERANK_SECONDS = _metric(Histogram, "quarry_rerank_seconds", "Reranker time per call", ["backend"], buckets=_BUCKETS)
INDEX_CHUNKS = _metric(Gauge, "quarry_index_chunks", "Chunks held per index, by engine", ["engine", "index"])
INGEST_QUEUED_JOBS = _metric(Gauge, "quarry_ingest_queued_jobs", "Jobs waiting or running")
INGEST_QUEUED_ITEMS = _metric(Gauge, "quarry_ingest_queued_items", "Items of waiting or running jobs not yet done")
INGEST_OLDEST_SECONDS = _metric(Gauge, "quarry_ingest_oldest_job_age_seconds",
                                "Age of the oldest waiting or running job")
INGEST_ITEMS = _metric(Counter, "quarry_ingest_items", "Ingest items finished, by result (done, failed)", ["result"])
INGEST_CHUNKS = _metric(Counter, "quarry_ingest_chunks", "Chunks written by the ingest worker")


def serve_metrics(host: str, port: int) -> int:
    """Serve ``/metrics`` on ``host:port`` (0 picks a port) in a thread; the bound port."""
    server, _thread = start_http_server(port, addr=host)
    return int(server.server_port)


# -- the server chain -------------------------------------------------------------------------


def _metadata_value(metadata: Sequence[tuple[str, Any]] | None, key: str) -> str:
    for k, v in metadata or ():
        if k == key:
            return v if isinstance(v, str) else v.decode("latin-1")
    return ""


class ObservingInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """The first link of every server's chain: the caller's request id into the logging context
    and its deadline into ``call_deadline``, then the call counted and timed per method and status."""

    def __init__(self, process: str) -> None:
        self._process = process

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or handler.unary_unary is None or details.method.startswith("/grpc.health."):
            return handler
        inner = handler.unary_unary
        method = details.method.rsplit("/", 1)[-1]
        rid = _metadata_value(details.invocation_metadata, REQUEST_ID_KEY)[:64]
        process = self._process

        async def observed(request: Any, context: grpc.aio.ServicerContext) -> Any:
            token = request_id.set(rid)
            left = context.time_remaining()
            deadline = call_deadline.set(None if left is None else time.monotonic() + left)
            started = time.perf_counter()
            code = "OK"
            try:
                response = await inner(request, context)
                status = context.code()
                if status is not None:
                    code = status.name
                return response
            except BaseException:
                status = context.code()
                code = status.name if status is not None and status != grpc.StatusCode.OK else "UNKNOWN"
                raise
            finally:
                seconds = time.perf_counter() - started
                GRPC_HANDLED.labels(process, method, code).inc()
                GRPC_SECONDS.labels(process, method).observe(seconds)
                log.debug("%s %s %.1fms", method, code, seconds * 1000)
                request_id.reset(token)
                call_deadline.reset(deadline)

        return grpc.unary_unary_rpc_method_handler(
            observed,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


def server_interceptors(process: str, *rest: grpc.aio.ServerInterceptor) -> list[grpc.aio.ServerInterceptor]:
    """The chain of every gRPC server: tracing (when on), request id and metrics, then ``rest``
    (the service credential check)."""
    chain: list[grpc.aio.ServerInterceptor] = []
    if tracing_enabled():
        from opentelemetry.instrumentation.grpc import aio_server_interceptor

        chain.append(aio_server_interceptor())
    return [*chain, ObservingInterceptor(process), *rest]


# -- the client chain -------------------------------------------------------------------------


class ContextClientInterceptor(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """Puts the current request id on every outbound call."""

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        rid = request_id.get()
        if rid:
            metadata = [m for m in (details.metadata or ()) if m[0] != REQUEST_ID_KEY]
            metadata.append((REQUEST_ID_KEY, rid))
            details = details._replace(metadata=metadata)
        return await continuation(details, request)


def client_interceptors() -> list[grpc.aio.ClientInterceptor]:
    """The chain of every outbound channel: the request id, and the trace context when tracing is on."""
    chain: list[grpc.aio.ClientInterceptor] = [ContextClientInterceptor()]
    if tracing_enabled():
        from opentelemetry.instrumentation.grpc import aio_client_interceptors

        chain.extend(aio_client_interceptors())
    return chain


# -- tracing ----------------------------------------------------------------------------------


def tracing_enabled() -> bool:
    """True when the standard variables ask for traces: an OTLP endpoint or ``OTEL_TRACES_EXPORTER``
    other than ``none``, and the SDK not disabled."""
    if os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    exporter = os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter:
        return exporter != "none"
    return bool(os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


_configured = False


def configure_tracing(process: str) -> bool:
    """Install the tracer provider (OTLP over gRPC, batched) for ``process`` when tracing is on,
    and instrument Redis; once per process. True when tracing is on."""
    global _configured
    if not tracing_enabled():
        return False
    if _configured:
        return True
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.instrumentation.redis import RedisInstrumentor
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    name = os.environ.get("OTEL_SERVICE_NAME") or f"quarry-{process}"
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    RedisInstrumentor().instrument()
    _configured = True
    log.info("tracing on: spans of %s exported over OTLP", name)
    return True


def shutdown_tracing() -> None:
    """Flush the spans still batched (at process exit)."""
    if not _configured:
        return
    from opentelemetry import trace

    provider = trace.get_tracer_provider()
    shutdown = getattr(provider, "shutdown", None)
    if shutdown is not None:
        shutdown()


def instrument_sqlalchemy(engine: Any) -> None:
    """Trace the catalog's SQL statements (a no-op when tracing is off)."""
    if tracing_enabled():
        from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

        SQLAlchemyInstrumentor().instrument(engine=engine.sync_engine)


def instrument_fastapi(app: Any) -> None:
    """Trace every HTTP request of the gateway (a no-op when tracing is off)."""
    if tracing_enabled():
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        # One server span per request: the ASGI send/receive spans would triple the span count.
        FastAPIInstrumentor.instrument_app(app, excluded_urls="healthz,readyz,metrics",
                                           exclude_spans=["receive", "send"])


def trace_id() -> str:
    """The current trace id in hex, or "" outside a recorded span."""
    if not _configured:
        return ""
    from opentelemetry import trace

    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else ""
