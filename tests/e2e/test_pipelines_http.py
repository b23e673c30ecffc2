"""The legacy pipelines surface over plain HTTP: what LlamaIndex never sends but a hand-written
client will (bad input, ids of other projects, the endpoints around the happy path)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from services.launcher import Stack
from tests.e2e.stack import running_stack

pytestmark = pytest.mark.e2e

API_KEY = "qk-pipelines-http"
DOCS = [
    {"id": "notes/solar", "text": "Photovoltaic panels turn sunlight into electricity.", "metadata": {"year": 2021}},
    {"id": "notes/bread", "text": "Sourdough rises with wild yeast and lactic bacteria.", "metadata": {"year": 2023}},
]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("quarry-pipelines"), API_KEY) as s:
        yield s


@pytest.fixture(scope="module")
def http(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.base_url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60) as c:
        yield c


def wait_done(http: httpx.Client, pipeline_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        status: dict[str, Any] = http.get(f"/api/v1/pipelines/{pipeline_id}/status").json()
        if status["status"] not in ("NOT_STARTED", "IN_PROGRESS"):
            return status
        time.sleep(0.2)
    raise AssertionError("pipeline did not finish syncing")


@pytest.fixture(scope="module")
def pipeline_id(http: httpx.Client) -> str:
    created = http.put("/api/v1/pipelines", json={"name": "http-notes", "transform_config": {"mode": "auto"}})
    assert created.status_code == 200, created.text
    pid: str = created.json()["id"]
    assert wait_done(http, pid)["status"] == "SUCCESS", "a new pipeline is synced (empty), not NOT_STARTED"
    assert http.post(f"/api/v1/pipelines/{pid}/documents", json=DOCS).status_code == 200
    assert wait_done(http, pid)["status"] == "SUCCESS"
    return pid


def test_upsert_by_name_keeps_the_id_and_update_by_id_merges(http: httpx.Client, pipeline_id: str) -> None:
    again = http.put("/api/v1/pipelines", json={"name": "http-notes"}).json()
    assert again["id"] == pipeline_id
    updated = http.put(f"/api/v1/pipelines/{pipeline_id}", json={"llama_parse_parameters": {"take_screenshot": True}})
    assert updated.status_code == 200
    assert updated.json()["llama_parse_parameters"] == {"take_screenshot": True}
    renamed = http.put(f"/api/v1/pipelines/{pipeline_id}", json={"name": "other"})
    assert renamed.status_code == 422 and renamed.json()["detail"][0]["loc"] == ["body", "name"]
    duplicate = http.post("/api/v1/pipelines", json={"name": "http-notes"})
    assert duplicate.status_code == 409 and duplicate.headers["x-should-retry"] == "false"
    listed = http.get("/api/v1/pipelines", params={"pipeline_name": "http-notes"}).json()
    assert [p["id"] for p in listed] == [pipeline_id]


def test_documents_read_back(http: httpx.Client, pipeline_id: str) -> None:
    one = http.get(f"/api/v1/pipelines/{pipeline_id}/documents/notes%252Fsolar")
    assert one.status_code == 200 and one.json()["text"] == DOCS[0]["text"]
    page = http.get(f"/api/v1/pipelines/{pipeline_id}/documents/paginated", params={"skip": 1, "limit": 5}).json()
    assert page["total_count"] == 2 and page["offset"] == 1 and len(page["documents"]) == 1
    assert http.get(f"/api/v1/pipelines/{pipeline_id}/documents/nope/status").status_code == 404


def test_bad_input_is_a_422_naming_the_field(http: httpx.Client, pipeline_id: str) -> None:
    url = f"/api/v1/pipelines/{pipeline_id}/retrieve"
    cases = [
        ({"query": "x", "alpha": 2}, ["body", "alpha"]),
        ({"query": "x", "retrieval_mode": "everything"}, ["body", "retrieval_mode"]),
        ({"query": "x", "search_filters": {"filters": [{"key": "year", "value": "soon", "operator": ">"}]}},
         ["body", "search_filters", "filters", 0, "value"]),
        ({"query": "x", "search_filters": {"filters": [{"key": "year", "value": 1, "operator": "~"}]}}, None),
        ({"query": ""}, ["body", "query"]),
    ]
    for body, loc in cases:
        response = http.post(url, json=body)
        assert response.status_code == 422, (body, response.text)
        if loc is not None:
            assert response.json()["detail"][0]["loc"] == loc, body
    bad_doc = http.post(f"/api/v1/pipelines/{pipeline_id}/documents", json=[{"id": "x", "metadata": {}}])
    assert bad_doc.status_code == 422 and bad_doc.json()["detail"][0]["loc"] == ["body", 0, "text"]


def test_unknown_ids_are_404_and_keys_are_checked(http: httpx.Client, stack: Stack, pipeline_id: str) -> None:
    assert http.post("/api/v1/pipelines/nope/retrieve", json={"query": "x"}).status_code == 404
    assert http.get("/api/v1/files/nope/page_screenshots/0").status_code == 404
    assert http.get("/api/v1/pipelines", params={"project_id": "someone-else"}).status_code == 404
    anonymous = httpx.post(f"{stack.base_url}/api/v1/pipelines/{pipeline_id}/retrieve", json={"query": "x"})
    assert anonymous.status_code == 401


def test_cancel_without_a_running_sync_is_a_final_409(http: httpx.Client, pipeline_id: str) -> None:
    response = http.post(f"/api/v1/pipelines/{pipeline_id}/sync/cancel")
    assert response.status_code == 409 and response.headers["x-should-retry"] == "false"


def test_modes_and_notes_in_the_metadata(http: httpx.Client, pipeline_id: str) -> None:
    url = f"/api/v1/pipelines/{pipeline_id}/retrieve"
    whole = http.post(url, json={"query": "yeast", "retrieval_mode": "files_via_content"}).json()
    assert [n["node"]["text"] for n in whole["retrieval_nodes"]] == [DOCS[1]["text"]]
    assert whole["metadata"]["retrieval_mode"] == "files_via_content"
    # Screenshots were turned on after these documents were ingested (and they are not PDFs).
    shots = http.post(url, json={"query": "yeast", "retrieve_page_screenshot_nodes": True,
                                 "retrieve_page_figure_nodes": True}).json()
    assert shots["image_nodes"] == []
    assert "page figures" in shots["metadata"]["page_figures"]
    assert set(shots["retrieval_latency"]) >= {"dense", "sparse", "fusion", "rerank", "total"}
    cached = http.post(url, json={"query": "yeast", "retrieve_page_screenshot_nodes": True,
                                  "retrieve_page_figure_nodes": True}).json()
    assert cached["metadata"]["cached"] == "true"
    assert cached["retrieval_nodes"] == shots["retrieval_nodes"]


def test_uploaded_files_can_be_deleted_but_copies_keep_their_bytes(http: httpx.Client, pipeline_id: str) -> None:
    uploaded = http.post("/api/v1/beta/files", files={"file": ("tide.txt", b"Tides follow the moon.", "text/plain")})
    assert uploaded.status_code == 200, uploaded.text
    file_id = uploaded.json()["id"]
    added = http.put(f"/api/v1/pipelines/{pipeline_id}/files", json=[{"file_id": file_id}])
    assert added.status_code == 200 and added.json()[0]["custom_metadata"]["file_name"] == "tide.txt"
    wait_done(http, pipeline_id)
    assert http.get(f"/api/v1/pipelines/{pipeline_id}/files/{file_id}/status").json()["status"] == "SUCCESS"
    assert http.delete(f"/api/v1/beta/files/{file_id}").status_code == 204
    assert http.get(f"/api/v1/beta/files/{file_id}").status_code == 404
    hits = http.post(f"/api/v1/pipelines/{pipeline_id}/retrieve", json={"query": "moon tides"}).json()
    assert hits["retrieval_nodes"][0]["node"]["text"] == "Tides follow the moon."


def test_readiness_survives_what_only_degrades_answers(http: httpx.Client, stack: Stack, pipeline_id: str) -> None:
    """Runs last in this module: it kills the reranker and the dense service."""
    stack.kill("rerank")
    ready = http.get("/readyz")
    assert ready.status_code == 200 and ready.json()["backends"]["rerank"] != "SERVING"
    answer = http.post(f"/api/v1/pipelines/{pipeline_id}/retrieve", json={"query": "wild yeast bread"}).json()
    assert answer["retrieval_nodes"] and "rerank failed" in answer["metadata"]["degraded"]
    stack.kill("dense")
    assert http.get("/readyz").status_code == 200  # sparse still answers
    stack.kill("sparse")
    assert http.get("/readyz").status_code == 503
