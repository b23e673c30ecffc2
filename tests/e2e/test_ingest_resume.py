"""Killing the ingest worker mid-sync: a new worker finishes the job, no chunk duplicated or missing."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from services.ingest.chunking import chunk_text
from services.ingest.parsing import parse
from services.launcher import Stack
from tests.e2e.stack import engine_counts

pytestmark = pytest.mark.e2e

API_KEY = "qk-resume-test"
LEASE = 2.0
WORDS = ("harbour lantern granite meadow cobalt willow ember quartz saddle thistle orbit falcon "
         "velvet canyon pepper lagoon marble cedar")


def document(i: int) -> str:
    words = WORDS.split()
    paragraphs = [
        " ".join(words[(i * 7 + j * 3 + k) % len(words)] for k in range(60)) + f". Document {i} part {j}."
        for j in range(8)
    ]
    return "\n\n".join(paragraphs)


FILES = {f"doc-{i:02d}.txt": document(i) for i in range(24)}


@pytest.fixture
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    data = tmp_path_factory.mktemp("quarry-resume")
    s = Stack(data_dir=data, port=0, api_key=API_KEY, log_file=data / "stack.log",
              env={"QUARRY_INGEST_LEASE_SECONDS": str(LEASE), "QUARRY_INGEST_POLL_INTERVAL": "0.2",
                   "QUARRY_INGEST_BATCH_SIZE": "8"})
    s.start(timeout=180)
    yield s
    s.stop()


def progress(http: httpx.Client, index_id: str) -> tuple[str, int, int]:
    index = http.get(f"/api/v1/indexes/{index_id}").json()
    p = index.get("sync_progress") or {}
    return index.get("sync_status") or "", p.get("done_items", 0), p.get("total_items", 0)


def count(stack: Stack, index_id: str) -> tuple[int, int]:
    return engine_counts(stack, index_id, timeout=10)


def test_killed_worker_leaves_the_job_to_the_next_one(stack: Stack) -> None:
    expected = sum(len(chunk_text(parse(text.encode(), name).text)) for name, text in FILES.items())
    http = httpx.Client(base_url=stack.base_url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30)
    directory = http.post("/api/v1/beta/directories", json={"name": "resume"}).json()
    for name, text in FILES.items():
        r = http.post(f"/api/v1/beta/directories/{directory['id']}/files/upload",
                      files={"upload_file": (name, text.encode())})
        assert r.status_code == 200, r.text
    index = http.post("/api/v1/indexes", json={"source_directory_id": directory["id"], "name": "resume"}).json()
    assert http.post(f"/api/v1/indexes/{index['id']}/sync").status_code == 200

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        status, done, total = progress(http, index["id"])
        if done >= 3:
            break
        time.sleep(0.05)
    assert status == "running" and 3 <= done < total, (status, done, total)
    stack.kill("ingest")
    killed_at_done = progress(http, index["id"])[1]
    assert killed_at_done < total

    stack.start_ingest()
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        status, done, total = progress(http, index["id"])
        if status in ("succeeded", "failed"):
            break
        time.sleep(0.2)
    assert (status, done, total) == ("succeeded", len(FILES), len(FILES))
    job = http.get(f"/api/v1/indexes/{index['id']}").json()["sync_progress"]
    assert job["error"] is None

    dense, sparse = count(stack, index["id"])
    assert dense == sparse == expected

    # Every file is searchable and readable in full.
    found = http.post("/api/v1/retrieval/files/find", json={"index_id": index["id"], "page_size": 100}).json()
    assert sorted(f["file_name"] for f in found["items"]) == sorted(FILES)
    for f in found["items"]:
        text = http.post("/api/v1/retrieval/files/read", json={"index_id": index["id"], "file_id": f["file_id"]}).json()
        assert text["content"] == FILES[f["file_name"]]
