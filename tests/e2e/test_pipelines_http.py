"""The legacy pipelines surface over plain HTTP: what LlamaIndex never sends but a hand-written
client will (bad input, ids of other projects, the endpoints around the happy path)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from llama_cloud import LlamaCloud, UnprocessableEntityError

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


LONG_DOC = " ".join(
    f"Entry {i}. The keeper of the northern lighthouse wrote that night {i} brought a storm from the west."
    for i in range(40)
)


def _chunk_texts(http: httpx.Client, pipeline_id: str) -> list[str]:
    """Every chunk of the pipeline (top_k above its chunk count, no reranking cut)."""
    answer = http.post(f"/api/v1/pipelines/{pipeline_id}/retrieve",
                       json={"query": "lighthouse keeper storm", "dense_similarity_top_k": 200,
                             "enable_reranking": False})
    assert answer.status_code == 200, answer.text
    return [n["node"]["text"] for n in answer.json()["retrieval_nodes"]]


def _pipeline_with_doc(http: httpx.Client, name: str, transform_config: dict[str, Any] | None) -> str:
    created = http.put("/api/v1/pipelines", json={"name": name, "transform_config": transform_config})
    assert created.status_code == 200, created.text
    pid: str = created.json()["id"]
    wait_done(http, pid)
    assert http.post(f"/api/v1/pipelines/{pid}/documents",
                     json=[{"id": "log", "text": LONG_DOC, "metadata": {}}]).status_code == 200
    assert wait_done(http, pid)["status"] == "SUCCESS"
    return pid


def test_transform_config_sets_the_chunking_of_its_pipeline(http: httpx.Client, stack: Stack) -> None:
    """chunk_size/chunk_overlap per pipeline; a change re-chunks what is already ingested; the
    pipeline reads back through llama-cloud's strict response models."""
    small = _pipeline_with_doc(http, "http-small-chunks", {"mode": "auto", "chunk_size": 32, "chunk_overlap": 4})
    default = _pipeline_with_doc(http, "http-default-chunks", {"mode": "auto"})
    small_chunks, default_chunks = _chunk_texts(http, small), _chunk_texts(http, default)
    assert len(small_chunks) > 3 * len(default_chunks) >= 3
    assert max(map(len, small_chunks)) < min(map(len, default_chunks[:-1]))  # the last chunk may be short

    # Changing the chunking re-chunks the ingested document (the update starts the sync).
    updated = http.put(f"/api/v1/pipelines/{default}", json={"transform_config": {
        "mode": "advanced", "chunking_config": {"mode": "sentence", "chunk_size": 32, "chunk_overlap": 4}}})
    assert updated.status_code == 200, updated.text
    assert updated.json()["transform_config"]["chunking_config"]["chunk_size"] == 32
    assert wait_done(http, default)["status"] == "SUCCESS"
    assert sorted(_chunk_texts(http, default)) == sorted(small_chunks)
    # Other settings keep the chunking (and start no re-chunking).
    kept = http.put(f"/api/v1/pipelines/{default}", json={"llama_parse_parameters": {}})
    assert kept.status_code == 200 and kept.json()["transform_config"]["chunking_config"]["chunk_size"] == 32

    client = LlamaCloud(api_key=API_KEY, base_url=stack.base_url, _strict_response_validation=True, max_retries=0)
    with pytest.warns(DeprecationWarning):  # the 2.x SDK marks the /pipelines API deprecated
        got = client.pipelines.get(small)
        listed = client.pipelines.list(pipeline_name="http-small-chunks")
    assert got.embedding_config.type == "HUGGINGFACE_API_EMBEDDING"
    assert got.embedding_config.component is not None
    assert got.embedding_config.component.api_model_name == "sentence-transformers/all-MiniLM-L6-v2"
    assert got.transform_config is not None and got.transform_config.to_dict() == {
        "mode": "auto", "chunk_size": 32, "chunk_overlap": 4}
    assert [p.id for p in listed] == [small]
    with pytest.warns(DeprecationWarning), pytest.raises(UnprocessableEntityError) as refused:
        client.pipelines.create(name="http-openai", embedding_config={
            "type": "OPENAI_EMBEDDING", "component": {"model_name": "text-embedding-3-small"}})
    assert refused.value.body["detail"][0]["loc"] == ["body", "embedding_config", "type"]  # type: ignore[index]


def test_settings_quarry_cannot_honour_are_a_422_naming_the_field(http: httpx.Client, pipeline_id: str) -> None:
    cases = [
        ({"embedding_config": {"type": "OPENAI_EMBEDDING", "component": {"model_name": "text-embedding-3-small"}}},
         ["body", "embedding_config", "type"], "all-MiniLM-L6-v2"),
        ({"embedding_config": {"type": "HUGGINGFACE_API_EMBEDDING", "component": {"model_name": "BAAI/bge-m3"}}},
         ["body", "embedding_config", "component", "model_name"], "all-MiniLM-L6-v2"),
        ({"transform_config": {"mode": "auto", "chunk_size": 1024, "chunk_overlap": 200}},
         ["body", "transform_config", "chunk_size"], "254"),
        ({"transform_config": {"chunk_size": 64, "chunk_overlap": 40}}, ["body", "transform_config", "chunk_overlap"],
         "below half"),
        ({"transform_config": {"mode": "advanced", "chunking_config": {"mode": "semantic"}}},
         ["body", "transform_config", "chunking_config", "mode"], "not supported"),
    ]
    for body, loc, says in cases:
        for response in (http.put("/api/v1/pipelines", json={"name": "http-refused", **body}),
                         http.post("/api/v1/pipelines", json={"name": "http-refused", **body}),
                         http.put(f"/api/v1/pipelines/{pipeline_id}", json=body)):
            assert response.status_code == 422, (body, response.text)
            [error] = response.json()["detail"]
            assert error["loc"] == loc and says in error["msg"], error
    assert http.get("/api/v1/pipelines", params={"pipeline_name": "http-refused"}).json() == []
    accepted = http.put(f"/api/v1/pipelines/{pipeline_id}", json={"embedding_config": {
        "type": "HUGGINGFACE_API_EMBEDDING", "component": {"model_name": "all-MiniLM-L6-v2"}}})
    assert accepted.status_code == 200
    assert accepted.json()["embedding_config"]["component"]["model_name"] == "sentence-transformers/all-MiniLM-L6-v2"


def test_readiness_survives_what_only_degrades_answers(http: httpx.Client, stack: Stack, pipeline_id: str) -> None:
    """Runs last in this module: it kills the reranker and the dense service."""
    stack.kill("rerank")
    ready = http.get("/readyz")
    assert ready.status_code == 200 and ready.json()["backends"]["rerank"] != "SERVING"
    answer = http.post(f"/api/v1/pipelines/{pipeline_id}/retrieve", json={"query": "wild yeast bread"}).json()
    # The default reranker scores the token vectors dense stored: no rerank service needed.
    assert answer["retrieval_nodes"] and not answer["metadata"].get("degraded")
    stack.kill("dense")
    assert http.get("/readyz").status_code == 200  # sparse still answers
    # Without dense there are no stored vectors to score and no reranker to fall back on.
    answer = http.post(f"/api/v1/pipelines/{pipeline_id}/retrieve", json={"query": "rising dough"}).json()
    assert answer["retrieval_nodes"] and "rerank failed" in answer["metadata"]["degraded"]
    stack.kill("sparse")
    assert http.get("/readyz").status_code == 503
