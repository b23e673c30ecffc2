"""A damaged keyword index on the running stack: found when sparse (re)starts, reported by
/readyz and by the index, retrieves answered by the dense leg alone and flagged, and
``quarry index rebuild`` restores it from the catalog's parsed texts to the same answers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from llama_cloud import LlamaCloud

from bench.faults import serving
from services.launcher import Stack
from services.sparse.adapters.tantivy import index_dir_name
from tests.e2e.corpus import ingest_corpus
from tests.e2e.stack import running_stack

pytestmark = pytest.mark.e2e

API_KEY = "qk-damaged"
QUERY = "lighthouse keeper storm log"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("quarry-damaged"), API_KEY) as s:
        yield s


def _answer(http: httpx.Client, index_id: str, query: str = QUERY) -> dict[str, Any]:
    r = http.post("/api/v1/retrieval/retrieve", json={"index_id": index_id, "query": query, "top_k": 10,
                                                     "rerank": {"enabled": False}})
    assert r.status_code == 200, r.text
    return dict(r.json())


def _ready(http: httpx.Client, timeout: float = 30.0) -> httpx.Response:
    """/readyz once it knows sparse's damaged list: right after a restart the gateway's channel may
    still be reconnecting, and the list is then ``null`` (unknown), never an empty list."""
    deadline = time.monotonic() + timeout
    while True:
        ready = http.get("/readyz")
        if ready.json()["damaged_indexes"]["sparse"] is not None or time.monotonic() > deadline:
            return ready
        time.sleep(0.2)


def _rows(answer: dict[str, Any]) -> list[tuple[str, int, float]]:
    return [(r["static_fields"]["parsed_directory_file_id"], r["static_fields"]["chunk_index"], r["score"])
            for r in answer["results"]]


def test_a_damaged_index_degrades_to_dense_and_a_rebuild_restores_it(stack: Stack) -> None:
    client = LlamaCloud(api_key=API_KEY, base_url=stack.base_url, max_retries=0, timeout=60)
    index_id = str(ingest_corpus(client, "damaged").id)
    http = httpx.Client(base_url=stack.base_url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60)
    before = _answer(http, index_id)
    assert before["degraded"] is None and all(r["sparse_score"] is not None for r in before["results"][:3])

    # Corrupt its tantivy files and restart sparse (the supervisor brings it back).
    (stack.data_dir / "sparse" / index_dir_name(index_id) / "meta.json").write_text("{corrupted")
    stack.signal("sparse", signal.SIGKILL)
    time.sleep(0.5)
    serving(stack, "sparse")

    ready = _ready(http)
    assert ready.status_code == 200, ready.text  # one damaged index does not take the stack out
    assert ready.json()["damaged_indexes"]["sparse"] == [index_id]
    health = http.get(f"/api/v1/indexes/{index_id}").json()["engine_health"]
    assert health["sparse"].startswith("damaged: ") and "meta.json" in health["sparse"]
    degraded = _answer(http, index_id, QUERY + " again")  # not the cached answer of the first query
    assert degraded["results"] and all(r["sparse_score"] is None for r in degraded["results"])
    assert "sparse index damaged" in degraded["degraded"][0] and "/rebuild" in degraded["degraded"][0]

    done = subprocess.run(
        [sys.executable, "-m", "services.cli", "index", "rebuild", "damaged-index", "--engine", "sparse",
         "--url", stack.base_url, "--api-key", API_KEY],
        capture_output=True, text=True, timeout=300, check=False, env={**os.environ, "COLUMNS": "200"},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "rebuilt" in done.stderr

    assert _ready(http).json()["damaged_indexes"]["sparse"] == []
    assert http.get(f"/api/v1/indexes/{index_id}").json()["engine_health"] == {"sparse": "ok"}
    after = _answer(http, index_id)  # the rebuild moved the index's generation: no stale cache entry
    assert after["degraded"] is None and after["cached"] is False
    assert [r[:2] for r in _rows(after)] == [r[:2] for r in _rows(before)]
    assert [r[2] for r in _rows(after)] == pytest.approx([r[2] for r in _rows(before)])


def test_a_rebuild_while_a_sync_runs_is_refused(stack: Stack) -> None:
    http = httpx.Client(base_url=stack.base_url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60)
    directory = http.post("/api/v1/beta/directories", json={"name": "busy"}).json()
    for i in range(30):
        http.post(f"/api/v1/beta/directories/{directory['id']}/files/upload",
                  files={"upload_file": (f"f{i}.txt", f"text number {i} about quartz".encode())})
    index = http.post("/api/v1/indexes", json={"source_directory_id": directory["id"], "name": "busy"}).json()
    http.post(f"/api/v1/indexes/{index['id']}/sync")
    refused = http.post(f"/api/v1/indexes/{index['id']}/rebuild", json={"engines": ["sparse"]})
    assert refused.status_code == 409, refused.text
    bad = http.post(f"/api/v1/indexes/{index['id']}/rebuild", json={"engines": ["graph"]})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"][:2] == ["body", "engines"]
