"""Operators' view of one retrieve: the metrics it moves on every process it touches, the one
trace it leaves across the gateway and every gRPC hop, and the caller's request id in a service's
log lines.

Traces go over real OTLP/gRPC to a collector this test runs (the OTLP trace service from
``opentelemetry-proto``), the way an OpenTelemetry Collector would receive them.
"""

from __future__ import annotations

import re
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from llama_cloud import LlamaCloud

from bench.telemetry import OtlpSink
from services.launcher import Stack
from tests.e2e.corpus import ingest_corpus
from tests.e2e.stack import running_stack

pytestmark = pytest.mark.e2e

API_KEY = "qk-observability-e2e"
REQUEST_ID = "obs-test-4f1c2d"
QUERY = "how do photovoltaic panels turn sunlight into power"


@pytest.fixture(scope="module")
def collector() -> Iterator[OtlpSink]:
    sink = OtlpSink().start()
    try:
        yield sink
    finally:
        sink.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, collector: OtlpSink) -> Iterator[Stack]:
    env = {
        **collector.env,
        # A DEBUG line per gRPC call in the files service: the request id must be on it.
        "QUARRY_FILES_LOG_LEVEL": "DEBUG",
    }
    with running_stack(tmp_path_factory.mktemp("observability"), API_KEY, env) as s:
        yield s


@pytest.fixture(scope="module")
def index(stack: Stack) -> Any:
    return ingest_corpus(LlamaCloud(api_key=API_KEY, base_url=stack.base_url), name="observability")


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$")


def scrape(url: str) -> dict[str, float]:
    """``name{labels}`` -> value of every sample at ``url``."""
    out: dict[str, float] = {}
    for line in httpx.get(url, timeout=5).text.splitlines():
        if line and not line.startswith("#") and (m := _SAMPLE.match(line)):
            out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return out


def total(samples: dict[str, float], name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    want = [f'{k}="{v}"' for k, v in labels.items()]
    return sum(v for k, v in samples.items()
               if k.split("{", 1)[0] == name and all(w in k for w in want))


def _retrieve(stack: Stack, index_id: str, query: str, request_id: str) -> httpx.Response:
    response = httpx.post(
        f"{stack.base_url}/api/v1/retrieval/retrieve",
        json={"index_id": index_id, "query": query, "rerank": {"enabled": True}},
        headers={"authorization": f"Bearer {API_KEY}", "x-request-id": request_id}, timeout=30,
    )
    assert response.status_code == 200, response.text
    assert response.json()["results"]
    return response


def test_a_retrieve_moves_the_metrics_of_every_process_it_touches(stack: Stack, index: Any) -> None:
    urls = stack.metrics_urls
    assert {"gateway", "dense", "sparse", "rerank", "files", "ingest"} <= set(urls)
    before = {name: scrape(url) for name, url in urls.items()}
    _retrieve(stack, index.id, "volcano eruptions cooled the planet", "obs-metrics-1")
    after = {name: scrape(url) for name, url in urls.items()}

    def moved(process: str, name: str, **labels: str) -> float:
        return total(after[process], name, **labels) - total(before[process], name, **labels)

    route = "/api/v1/retrieval/retrieve"
    assert moved("gateway", "quarry_http_requests_total", route=route, status="200") == 1
    assert moved("gateway", "quarry_http_request_duration_seconds_count", route=route) == 1
    for stage in ("embed", "dense", "sparse", "fusion", "rerank"):
        assert moved("gateway", "quarry_retrieve_stage_seconds_count", stage=stage) == 1, stage
    assert moved("gateway", "quarry_cache_requests_total", cache="response", result="miss") == 1
    assert moved("dense", "quarry_grpc_server_handled_total", method="Search", code="OK") == 1
    assert moved("dense", "quarry_grpc_server_handling_seconds_count", method="Search") == 1
    assert moved("sparse", "quarry_grpc_server_handled_total", method="Search", code="OK") == 1
    # The default rerank scores the token vectors dense stored: a LateScores call, no model run.
    assert moved("dense", "quarry_grpc_server_handled_total", method="LateScores", code="OK") == 1
    assert moved("rerank", "quarry_grpc_server_handled_total", method="Score") == 0

    # The same query again is a cache hit and touches no engine.
    _retrieve(stack, index.id, "volcano eruptions cooled the planet", "obs-metrics-2")
    again = scrape(urls["gateway"])
    assert total(again, "quarry_cache_requests_total", cache="response", result="hit") - \
        total(after["gateway"], "quarry_cache_requests_total", cache="response", result="hit") == 1
    assert total(scrape(urls["dense"]), "quarry_grpc_server_handled_total", method="Search") == \
        total(after["dense"], "quarry_grpc_server_handled_total", method="Search")

    # What the ingest of the corpus left: items done, chunks written, per-index chunk gauges.
    assert total(after["ingest"], "quarry_ingest_items_total", result="done") >= 6
    assert total(after["ingest"], "quarry_ingest_chunks_total") >= 6
    deadline = time.monotonic() + 30  # the files service reads its gauges every 15 s
    while total(scrape(urls["files"]), "quarry_index_chunks", index=index.id) == 0:
        assert time.monotonic() < deadline, "the chunk gauge of the index never appeared"
        time.sleep(0.5)
    files = scrape(urls["files"])
    assert total(files, "quarry_index_chunks", index=index.id) == total(after["ingest"], "quarry_ingest_chunks_total")
    assert total(files, "quarry_ingest_queued_jobs") == 0
    assert "process_resident_memory_bytes" in files


def test_one_retrieve_is_one_trace_across_every_process(stack: Stack, index: Any, collector: OtlpSink) -> None:
    sink = collector
    _retrieve(stack, index.id, QUERY, REQUEST_ID)
    # The gateway's HTTP server span of this request names the trace.
    deadline = time.monotonic() + 20
    # The default rerank is a dense call (stored token vectors): the rerank process is not on the path.
    wanted = {"quarry-gateway", "quarry-dense", "quarry-sparse", "quarry-files"}
    while True:
        by_trace: dict[str, set[str]] = defaultdict(set)
        names: dict[str, set[str]] = defaultdict(set)
        for service, trace_id, name in sink.snapshot():
            by_trace[trace_id].add(service)
            names[trace_id].add(name)
        traces = [t for t, n in names.items() if any("/api/v1/retrieval/retrieve" in x for x in n)
                  and "/quarry.dense.v1.DenseSearch/LateScores" in n]
        if traces and any(wanted <= by_trace[t] for t in traces):
            break
        assert time.monotonic() < deadline, f"no trace spans every process: {[by_trace[t] for t in traces]}"
        time.sleep(0.3)
    trace_id = next(t for t in traces if wanted <= by_trace[t])
    grpc_spans = {n for n in names[trace_id] if n.startswith("/quarry.")}
    assert {"/quarry.dense.v1.DenseSearch/Search", "/quarry.sparse.v1.SparseSearch/Search",
            "/quarry.dense.v1.DenseSearch/LateScores"} <= grpc_spans, grpc_spans


def test_a_service_log_line_carries_the_callers_request_id_and_trace(stack: Stack, index: Any) -> None:
    rid = "obs-log-7a9e"
    # Reading an index always asks the files service (a retrieve may be served from the
    # gateway's key and index caches).
    response = httpx.get(f"{stack.base_url}/api/v1/indexes/{index.id}", timeout=10,
                         headers={"authorization": f"Bearer {API_KEY}", "x-request-id": rid})
    assert response.status_code == 200 and response.headers["x-request-id"] == rid
    log = Path(stack.log_file or "").read_text()
    lines = [line for line in log.splitlines() if f"request_id={rid}" in line and " files " in line]
    assert lines, "no files-service log line carries the request id"
    assert all(re.search(r"trace_id=[0-9a-f]{32}", line) for line in lines), lines[:3]
