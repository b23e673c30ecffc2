"""The same retrieves over the gateway's two surfaces, HTTP (JSON) and gRPC (protobuf), in one run.

One synthetic index; one stack; ``rounds`` interleaved rounds, each measuring closed-loop
retrieves with fresh queries (no cache hit) and rerank off (the transport's cost, not the
model's) at concurrency 1 and at ``concurrency``, HTTP then gRPC. The HTTP client is httpx with a
keep-alive pool of ``concurrency`` connections (what the SDKs use); the gRPC client one grpc.aio
channel (HTTP/2, calls multiplexed). The summary is the median over rounds and gRPC's ratio to HTTP.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc

from bench.api import API_KEY, QuarryClient, Timed, running_stack
from bench.corpus import Vocabulary
from bench.load import Workload, closed_loop, ingest_synthetic
from services._proto.quarry.retrieval.v1 import retrieval_pb2 as pb
from services._proto.quarry.retrieval.v1 import retrieval_pb2_grpc as pb_grpc

SURFACES = ("http", "grpc")
FIGURES = ("c1_p50_ms", "c1_p99_ms", "cN_p50_ms", "cN_p99_ms", "throughput_rps")


def grpc_sender(stub: pb_grpc.RetrievalStub, index_id: str, work: Workload) -> Callable[[], Awaitable[Timed]]:
    metadata = (("authorization", f"Bearer {API_KEY}"),)

    async def send() -> Timed:
        request = pb.RetrieveRequest(index_id=index_id, query=work.fresh_query(),
                                     rerank=pb.RerankOptions(enabled=False))
        t0 = time.perf_counter()
        try:
            response = await stub.Retrieve(request, metadata=metadata, timeout=60)
        except grpc.aio.AioRpcError:
            return Timed(time.perf_counter() - t0, 599)
        seconds = time.perf_counter() - t0
        return Timed(seconds, 200, {"latency": dict(response.latency), "degraded": list(response.degraded),
                                    "cached": response.cached})

    return send


def run(vocab: Vocabulary, work_dir: Path, *, chunks: int = 2_000, concurrency: int = 32, duration: float = 15,
        rounds: int = 3) -> dict[str, Any]:
    out: dict[str, Any] = {"chunks": chunks, "concurrency": concurrency, "duration_s": duration, "rounds": rounds,
                           "rerank": False, "runs": {s: [] for s in SURFACES}}
    with running_stack(work_dir / "stack") as stack:
        async def measure() -> None:
            async with QuarryClient(stack.base_url, connections=concurrency) as client:
                step = await ingest_synthetic(client, vocab, chunks, name="surfaces")
                index_id = str(step["index_id"])
                used: set[str] = set()
                async with grpc.aio.insecure_channel(stack.grpc_address) as channel:
                    stub = pb_grpc.RetrievalStub(channel)
                    for n in range(rounds):
                        for surface in SURFACES:
                            work = Workload(client, index_id, vocab, [], seed=2000 + 10 * n + len(surface), used=used)
                            send = work.sender("retrieve") if surface == "http" else grpc_sender(stub, index_id, work)
                            for _ in range(10):  # warm: connections, the engines' caches
                                await send()
                            one = await closed_loop(send, 1, duration)
                            many = await closed_loop(send, concurrency, duration)
                            result = {"c1_p50_ms": one["p50"], "c1_p99_ms": one["p99"], "cN_p50_ms": many["p50"],
                                      "cN_p99_ms": many["p99"], "throughput_rps": many["throughput_rps"],
                                      "errors": one["errors"] + many["errors"],
                                      "degraded": one["degraded"] + many["degraded"],
                                      "cached": one["cached"] + many["cached"]}
                            out["runs"][surface].append(result)
                            print(f"  round {n + 1} {surface:4s} c=1 p50 {result['c1_p50_ms']:6.1f} ms "
                                  f"p99 {result['c1_p99_ms']:6.1f} ms | c={concurrency} p50 "
                                  f"{result['cN_p50_ms']:6.1f} ms p99 {result['cN_p99_ms']:6.1f} ms "
                                  f"{result['throughput_rps']:6.1f} req/s", flush=True)

        asyncio.run(measure())
    out["summary"] = summarize(out["runs"])
    return out


def summarize(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    med = {s: {k: statistics.median(r[k] for r in rs) for k in FIGURES} for s, rs in runs.items() if rs}
    if "http" in med and "grpc" in med:
        med["grpc_vs_http"] = {k: med["grpc"][k] / med["http"][k] for k in FIGURES}
    return med


def rows(result: dict[str, Any]) -> list[list[str]]:
    """(surface, c=1 p50, c=1 p99, c=N p50, c=N p99, throughput) and the ratio row, for the report."""
    out = []
    for surface in SURFACES:
        m = result["summary"][surface]
        out.append([surface, *(f"{m[k]:.1f}" for k in FIGURES)])
    ratio = result["summary"]["grpc_vs_http"]
    out.append(["gRPC / HTTP", *(f"{ratio[k]:.2f}" for k in FIGURES)])
    return out
