"""Crash safety: SIGKILL files and dense in the middle of a 200-file sync, and SIGKILL every
process at once; the supervisor restarts them, and every index ends with exactly its chunks,
none lost and none duplicated, counted in both engines and in the catalog."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import pytest

from bench.faults import serving
from services._proto.quarry.files.v1 import files_pb2, files_pb2_grpc
from services.ingest.chunking import chunk_text
from services.ingest.parsing import parse
from services.launcher import BACKENDS, Stack
from tests.e2e.stack import engine_counts, running_stack

pytestmark = pytest.mark.e2e

API_KEY = "qk-crash"
WORDS = "basalt harbour lantern cobalt meadow quartz thistle falcon canyon lagoon cedar orbit".split()


def text(i: int) -> str:
    return " ".join(WORDS[(i * 3 + k) % len(WORDS)] for k in range(90 + i % 120)) + f". Note {i}."


FILES = {f"note-{i:03d}.txt": text(i) for i in range(200)}


@pytest.fixture
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    env = {"QUARRY_INGEST_LEASE_SECONDS": "3", "QUARRY_INGEST_BATCH_SIZE": "16", "QUARRY_INGEST_WINDOW_FILES": "8"}
    with running_stack(tmp_path_factory.mktemp("quarry-crash"), API_KEY, env) as s:
        yield s


def _http(stack: Stack) -> httpx.Client:
    return httpx.Client(base_url=stack.base_url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60)


def _create(http: httpx.Client, name: str, files: dict[str, str]) -> str:
    directory = http.post("/api/v1/beta/directories", json={"name": name}).json()
    for file_name, body in files.items():
        r = http.post(f"/api/v1/beta/directories/{directory['id']}/files/upload",
                      files={"upload_file": (file_name, body.encode())})
        assert r.status_code == 200, r.text
    index = http.post("/api/v1/indexes", json={"source_directory_id": directory["id"], "name": name}).json()
    assert http.post(f"/api/v1/indexes/{index['id']}/sync").status_code == 200
    return str(index["id"])


def _progress(http: httpx.Client, index_id: str) -> tuple[str, int, int]:
    response = http.get(f"/api/v1/indexes/{index_id}")
    if response.status_code != 200:
        return "unknown", 0, 0  # the catalog is restarting
    index = response.json()
    p = index.get("sync_progress") or {}
    return index.get("sync_status") or "", p.get("done_items", 0), p.get("total_items", 0)


def _wait_synced(http: httpx.Client, index_id: str, timeout: float = 300) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, _, _ = _progress(http, index_id)
        if status in ("succeeded", "failed"):
            index = http.get(f"/api/v1/indexes/{index_id}").json()
            assert status == "succeeded", index
            return dict(index)
        time.sleep(0.3)
    raise AssertionError("the sync did not finish")


def _counted(stack: Stack, index_id: str) -> dict[str, int]:
    """Chunks of the index in dense and in sparse."""
    dense, sparse = engine_counts(stack, index_id)
    return {"dense": dense, "sparse": sparse}


def _catalog_chunks(stack: Stack, job_id: str) -> tuple[int, set[str]]:
    with grpc.insecure_channel(stack.addresses["files"]) as f:
        items = files_pb2_grpc.FilesStub(f).ListJobItems(files_pb2.ListJobItemsRequest(job_id=job_id), timeout=30,
                                                        metadata=stack.call_metadata).items
    return sum(i.chunk_count for i in items), {i.status for i in items}


def _expected(files: dict[str, str]) -> int:
    return sum(len(chunk_text(parse(body.encode(), name).text)) for name, body in files.items())


def test_killing_files_and_dense_mid_sync_loses_and_duplicates_nothing(stack: Stack) -> None:
    http = _http(stack)
    index_id = _create(http, "crash", FILES)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        status, done, total = _progress(http, index_id)
        if done >= 30:
            break
        time.sleep(0.05)
    assert status == "running" and 30 <= done < total, (status, done, total)
    stack.signal("files", signal.SIGKILL)
    stack.signal("dense", signal.SIGKILL)
    time.sleep(0.5)
    serving(stack, "files")
    serving(stack, "dense")

    index = _wait_synced(http, index_id)
    expected = _expected(FILES)
    assert index["sync_progress"]["done_items"] == len(FILES)
    catalog, statuses = _catalog_chunks(stack, index["sync_progress"]["job_id"])
    assert statuses == {"done"}
    assert _counted(stack, index_id) == {"dense": expected, "sparse": expected}
    assert catalog == expected
    assert {e.split(" ")[0] for e in stack.events} == {"files", "dense"}  # restarted, nothing else died

    found = http.post("/api/v1/retrieval/files/find", json={"index_id": index_id, "page_size": 500}).json()
    assert sorted(f["file_name"] for f in found["items"]) == sorted(FILES)
    sample = found["items"][::37]
    for f in sample:
        read = http.post("/api/v1/retrieval/files/read", json={"index_id": index_id, "file_id": f["file_id"]})
        assert read.json()["content"] == FILES[f["file_name"]]


def test_killing_every_process_at_once_keeps_every_index(stack: Stack) -> None:
    http = _http(stack)
    corpora = {"alpha": dict(list(FILES.items())[:40]), "beta": dict(list(FILES.items())[40:70])}
    ids = {name: _create(http, name, files) for name, files in corpora.items()}
    for index_id in ids.values():
        _wait_synced(http, index_id)
    query = "lantern harbour quartz falcon"
    before = {name: http.post("/api/v1/retrieval/retrieve", json={"index_id": i, "query": query, "top_k": 10,
                                                                    "rerank": {"enabled": False}}).json()
              for name, i in ids.items()}

    for proc in list(stack.processes):
        proc.popen.send_signal(signal.SIGKILL)
    time.sleep(0.5)
    for name in BACKENDS:
        serving(stack, name, timeout=90)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if http.get("/readyz").status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.2)

    for name, index_id in ids.items():
        expected = _expected(corpora[name])
        assert _counted(stack, index_id) == {"dense": expected, "sparse": expected}
        after = http.post("/api/v1/retrieval/retrieve", json={"index_id": index_id, "query": query, "top_k": 10,
                                                             "rerank": {"enabled": False}}).json()
        assert [(r["static_fields"]["parsed_directory_file_id"], r["static_fields"]["chunk_index"])
                for r in after["results"]] == [
            (r["static_fields"]["parsed_directory_file_id"], r["static_fields"]["chunk_index"])
            for r in before[name]["results"]]
        assert [r["score"] for r in after["results"]] == pytest.approx([r["score"] for r in before[name]["results"]])
