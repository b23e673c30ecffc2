"""The OpenSearch node stops in the middle of a sync and comes back on the same data directory:
the sync resumes and finishes with exactly the chunks it should have, in both engines and in the
catalog, none lost and none duplicated.

The node is this test's own (``tests/opensearch``), not the session's: it is stopped and started.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest

from services._proto.quarry.dense.v1 import dense_pb2, dense_pb2_grpc
from services._proto.quarry.sparse.v1 import sparse_pb2, sparse_pb2_grpc
from services.common.domain import chunk_id
from services.ingest.chunking import chunk_text
from services.ingest.parsing import parse
from services.launcher import Stack
from tests import servers
from tests.e2e.stack import running_stack
from tests.opensearch.node import OpenSearchNode, java_available

pytestmark = pytest.mark.e2e

API_KEY = "qk-opensearch-restart"
WORDS = ("harbour lantern granite meadow cobalt willow ember quartz saddle thistle orbit falcon "
         "velvet canyon pepper lagoon marble cedar").split()


def document(i: int) -> str:
    return "\n\n".join(
        " ".join(WORDS[(i * 5 + j * 3 + k) % len(WORDS)] for k in range(70)) + f". Report {i} section {j}."
        for j in range(6)
    )


FILES = {f"report-{i:02d}.txt": document(i) for i in range(40)}


@pytest.fixture
def node(tmp_path: Path) -> Iterator[OpenSearchNode]:
    if not java_available():
        servers.unavailable("no JDK/Maven to start a dedicated OpenSearch node")
    node = OpenSearchNode(tmp_path / "opensearch").start()
    yield node
    node.stop()


@pytest.fixture
def stack(tmp_path: Path, node: OpenSearchNode) -> Iterator[Stack]:
    env = {
        "QUARRY_SPARSE_OPENSEARCH_URL": node.url,
        "QUARRY_SPARSE_OPENSEARCH_REPLICAS": "0",
        "QUARRY_SPARSE_OPENSEARCH_INDEX_PREFIX": f"qrestart-{uuid.uuid4().hex[:8]}-",
        # Small writes and a short lease: the outage falls mid-job, and a job abandoned while the
        # node is down is claimed again soon after.
        "QUARRY_INGEST_BATCH_SIZE": "8",
        "QUARRY_INGEST_WINDOW_FILES": "4",
        "QUARRY_INGEST_LEASE_SECONDS": "3",
    }
    with running_stack(tmp_path / "stack", API_KEY, env) as s:
        yield s


def _progress(http: httpx.Client, index_id: str) -> tuple[str, int, int]:
    index = http.get(f"/api/v1/indexes/{index_id}").json()
    p = index.get("sync_progress") or {}
    return index.get("sync_status") or "", p.get("done_items", 0), p.get("total_items", 0)


def _counts(stack: Stack, index_id: str) -> tuple[int, int]:
    with grpc.insecure_channel(stack.addresses["dense"]) as d, grpc.insecure_channel(stack.addresses["sparse"]) as s:
        dense = dense_pb2_grpc.DenseSearchStub(d).Count(dense_pb2.CountRequest(index_id=index_id), timeout=30,
                                                         metadata=stack.call_metadata).count
        sparse = sparse_pb2_grpc.SparseSearchStub(s).Count(sparse_pb2.CountRequest(index_id=index_id), timeout=30,
                                                             metadata=stack.call_metadata).count
    return dense, sparse


def test_the_sync_survives_a_node_restart_with_no_chunk_lost_or_duplicated(stack: Stack,
                                                                           node: OpenSearchNode) -> None:
    chunks_of = {name: len(chunk_text(parse(text.encode(), name).text)) for name, text in FILES.items()}
    http = httpx.Client(base_url=stack.base_url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30)
    directory = http.post("/api/v1/beta/directories", json={"name": "restart"}).json()
    for name, text in FILES.items():
        r = http.post(f"/api/v1/beta/directories/{directory['id']}/files/upload",
                      files={"upload_file": (name, text.encode())})
        assert r.status_code == 200, r.text
    index = http.post("/api/v1/indexes", json={"source_directory_id": directory["id"], "name": "restart"}).json()
    assert http.post(f"/api/v1/indexes/{index['id']}/sync").status_code == 200

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        status, done, total = _progress(http, index["id"])
        if done >= 4:
            break
        time.sleep(0.05)
    assert status == "running" and 4 <= done < total, (status, done, total)
    node.stop()  # SIGTERM mid-sync: writes in flight fail, the worker backs off
    stopped_at = _progress(http, index["id"])[1]
    time.sleep(5)
    assert _progress(http, index["id"])[1] < total, "the sync must not finish without its engine"
    node.restart()

    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        status, done, total = _progress(http, index["id"])
        if status in ("succeeded", "failed"):
            break
        time.sleep(0.3)
    job = http.get(f"/api/v1/indexes/{index['id']}").json()["sync_progress"]
    assert (status, done, total) == ("succeeded", len(FILES), len(FILES)), job
    assert job["error"] is None
    assert stopped_at < total

    # The catalog, both engines and the OpenSearch index itself hold exactly the expected chunks.
    expected_total = sum(chunks_of.values())
    assert _counts(stack, index["id"]) == (expected_total, expected_total)
    found = http.post("/api/v1/retrieval/files/find", json={"index_id": index["id"], "page_size": 100}).json()
    assert sorted(f["file_name"] for f in found["items"]) == sorted(FILES)
    expected_ids = {chunk_id(f["file_id"], 1, i) for f in found["items"] for i in range(chunks_of[f["file_name"]])}
    name = http_index_name(node, index["id"])
    docs = httpx.post(f"{node.url}/{name}/_search", json={"size": 10_000, "_source": ["id"]}, timeout=30).json()
    ids = [hit["_source"]["id"] for hit in docs["hits"]["hits"]]
    assert len(ids) == len(set(ids)) == expected_total
    assert set(ids) == expected_ids
    assert stack.failed() == []


def http_index_name(node: OpenSearchNode, index_id: str) -> str:
    """The one OpenSearch index holding ``index_id``'s chunks (not its ``.files`` companion)."""
    names = [n for n in httpx.get(f"{node.url}/_cat/indices?format=json", timeout=30).json()
             if n["index"].endswith(index_id)]
    (only,) = names
    return str(only["index"])
