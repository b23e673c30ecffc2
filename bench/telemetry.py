"""What metrics and tracing cost a retrieve, measured in one run.

One synthetic index is ingested once; the same data dir is then served by the stack in three
configurations, each started in turn and measured in ``rounds`` interleaved rounds (so drift of
the shared machine spreads over all three):

- ``off``: ``QUARRY_METRICS_ENABLED=false``, no tracing;
- ``metrics``: the default (Prometheus metrics on every process, tracing off);
- ``metrics+traces``: every span exported over OTLP/gRPC, batched, to a collector in this
  process (``OtlpSink``), as to an OpenTelemetry Collector beside the stack.

Each round measures closed-loop retrieves (no rerank, fresh queries) at concurrency 1 (p50, p99)
and at ``concurrency`` (throughput). The report gives each configuration's ratio to ``off``.
"""

from __future__ import annotations

import asyncio
import statistics
import threading
from collections.abc import Sequence
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from bench.api import QuarryClient, running_stack
from bench.corpus import Vocabulary
from bench.load import Workload, closed_loop, ingest_synthetic

CONFIGS = ("off", "metrics", "metrics+traces")


class OtlpSink(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP trace receiver keeping (service name, trace id hex, span name) of every span."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, str, str]] = []
        self._lock = threading.Lock()
        self._server: grpc.Server | None = None
        self.port = 0

    def Export(self, request: Any, context: Any) -> Any:
        with self._lock:
            for resource_spans in request.resource_spans:
                service = next((a.value.string_value for a in resource_spans.resource.attributes
                                if a.key == "service.name"), "")
                for scope in resource_spans.scope_spans:
                    self.spans.extend((service, s.trace_id.hex(), s.name) for s in scope.spans)
        return trace_service_pb2.ExportTraceServiceResponse()

    def snapshot(self) -> list[tuple[str, str, str]]:
        with self._lock:
            return list(self.spans)

    def start(self) -> OtlpSink:
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(self, self._server)
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self._server.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(0)

    @property
    def env(self) -> dict[str, str]:
        """The standard variables that send every process's spans here."""
        return {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{self.port}",
                "OTEL_EXPORTER_OTLP_INSECURE": "true", "OTEL_BSP_SCHEDULE_DELAY": "200"}


def _env(config: str, sink: OtlpSink) -> dict[str, str]:
    if config == "off":
        return {"QUARRY_METRICS_ENABLED": "false"}
    return sink.env if config == "metrics+traces" else {}


def run(vocab: Vocabulary, work_dir: Path, *, chunks: int = 2_000, concurrency: int = 32, duration: float = 20,
        rounds: int = 2, configs: Sequence[str] = CONFIGS) -> dict[str, Any]:
    data = work_dir / "stack"
    out: dict[str, Any] = {"chunks": chunks, "concurrency": concurrency, "duration_s": duration, "rounds": rounds,
                           "runs": {c: [] for c in configs}}
    index_file = work_dir / "index_id"
    if not index_file.exists():
        with running_stack(data) as stack:
            async def ingest() -> str:
                async with QuarryClient(stack.base_url) as client:
                    step = await ingest_synthetic(client, vocab, chunks, name="telemetry")
                    return str(step["index_id"])
            index_file.write_text(asyncio.run(ingest()))
    index_id = index_file.read_text().strip()
    sink = OtlpSink().start()
    try:
        for n in range(rounds):
            for config in configs:
                with running_stack(data, _env(config, sink)) as stack:
                    async def measure(seed: int) -> dict[str, Any]:
                        async with QuarryClient(stack.base_url, connections=concurrency) as client:
                            send = Workload(client, index_id, vocab, [], seed=seed).sender("retrieve")
                            for _ in range(10):  # warm: models, caches of the engines, connections
                                await send()
                            one = await closed_loop(send, 1, duration)
                            many = await closed_loop(send, concurrency, duration)
                            return {"c1_p50_ms": one["p50"], "c1_p99_ms": one["p99"],
                                    "throughput_rps": many["throughput_rps"], "errors": one["errors"] + many["errors"]}
                    result = asyncio.run(measure(1000 + n))
                    out["runs"][config].append(result)
                    print(f"  round {n + 1} {config:15s} c=1 p50 {result['c1_p50_ms']:6.1f} ms  "
                          f"p99 {result['c1_p99_ms']:6.1f} ms  c={concurrency} {result['throughput_rps']:6.1f} req/s",
                          flush=True)
    finally:
        sink.stop()
    out["spans_received"] = len(sink.snapshot())
    out["summary"] = summarize(out["runs"])
    return out


def summarize(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Per configuration: the median over rounds of each figure, and its ratio to ``off``."""
    med = {c: {k: statistics.median(r[k] for r in rs) for k in ("c1_p50_ms", "c1_p99_ms", "throughput_rps")}
           for c, rs in runs.items() if rs}
    base = med.get("off")
    if base:
        for m in med.values():
            m["p50_vs_off"] = m["c1_p50_ms"] / base["c1_p50_ms"]
            m["throughput_vs_off"] = m["throughput_rps"] / base["throughput_rps"]
    return med


def rows(result: dict[str, Any]) -> list[list[str]]:
    """(configuration, p50, p99, throughput, p50 change, throughput change) for the report."""
    out = []
    for config, m in result["summary"].items():
        p50_change, rps_change = m.get("p50_vs_off", 1) - 1, m.get("throughput_vs_off", 1) - 1
        out.append([config, f"{m['c1_p50_ms']:.1f}", f"{m['c1_p99_ms']:.1f}", f"{m['throughput_rps']:.1f}",
                    f"{100 * p50_change:+.1f} %", f"{100 * rps_change:+.1f} %"])
    return out
