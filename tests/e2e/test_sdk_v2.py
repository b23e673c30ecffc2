"""The whole stack as processes, driven only through the official ``llama-cloud==2.19.0`` SDK."""

from __future__ import annotations

import io
import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import llama_cloud
import pytest
from llama_cloud import LlamaCloud

from services.launcher import Stack
from tests.e2e.corpus import DOCS, HISTORY, REPORT_PDF, ingest_corpus, names, wait_synced
from tests.e2e.stack import running_stack

pytestmark = pytest.mark.e2e

API_KEY = "qk-e2e-test-key"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("quarry-e2e"), API_KEY) as s:
        yield s


@pytest.fixture(scope="module")
def client(stack: Stack) -> LlamaCloud:
    return LlamaCloud(api_key=API_KEY, base_url=stack.base_url, max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def index(client: LlamaCloud) -> Any:
    return ingest_corpus(client)


@pytest.fixture(scope="module")
def file_ids(client: LlamaCloud, index: Any) -> dict[str, str]:
    return {f.file_name: f.file_id for f in client.retrieval.find(index_id=index.id)}


def test_best_result_answers_the_query_and_results_are_ordered(client: LlamaCloud, index: Any,
                                                               file_ids: dict[str, str]) -> None:
    response = client.retrieval.retrieve(index_id=index.id, query="how do photovoltaic panels turn sunlight into power")
    results = response.results
    assert names(results, file_ids)[0] == "solar.md"
    rerank_scores = [r.rerank_score for r in results]
    assert all(s is not None for s in rerank_scores), "rerank is on by default"
    assert rerank_scores == sorted(rerank_scores, reverse=True)
    top = results[0]
    assert top.metadata == {"year": 2021, "author": "Ada", "topic": "energy", "draft": False}
    sf = top.static_fields
    assert sf.chunk_index == 0 and sf.chunk_token_count > 0
    text = client.retrieval.read(index_id=index.id, file_id=sf.parsed_directory_file_id, offset=sf.chunk_start_char,
                                 max_length=sf.chunk_end_char - sf.chunk_start_char).content
    assert text == top.content


def test_top_k_and_rerank_top_n_limit_the_count(client: LlamaCloud, index: Any) -> None:
    assert len(client.retrieval.retrieve(index_id=index.id, query="lighthouse storm", top_k=3).results) == 3
    assert len(client.retrieval.retrieve(index_id=index.id, query="lighthouse storm", top_k=7).results) == 7
    out = client.retrieval.retrieve(index_id=index.id, query="lighthouse storm", top_k=5, rerank={"top_n": 2})
    assert len(out.results) == 2


def test_without_rerank_results_are_ordered_by_score(client: LlamaCloud, index: Any, file_ids: dict[str, str]) -> None:
    out = client.retrieval.retrieve(index_id=index.id, query="sourdough starter yeast", rerank={"enabled": False})
    assert all(r.rerank_score is None for r in out.results)
    scores = [r.score for r in out.results]
    assert scores == sorted(scores, reverse=True)
    assert names(out.results, file_ids)[0] == "baking.html"
    assert "ignored()" not in out.results[0].content


def test_a_zero_weight_skips_that_leg(client: LlamaCloud, index: Any) -> None:
    out = client.retrieval.retrieve(index_id=index.id, query="borrow checker", vector_pipeline_weight=0.0,
                                    full_text_pipeline_weight=1.0, rerank={"enabled": False})
    assert out.results
    assert all((r.model_extra or {}).get("dense_score") is None for r in out.results)
    assert (out.model_extra or {})["latency"]["dense"] == 0.0  # the dense service was never called
    assert (out.model_extra or {})["latency"]["sparse"] > 0.0


EVERY_DOC_WORDS = "photovoltaic volcanoes sourdough rust lighthouse glacier kettle"
FILTER_CASES: list[tuple[dict[str, Any], set[str]]] = [
    ({"author": {"operator": "eq", "value": "Ada"}}, {"solar.md", "rust.md"}),
    ({"author": {"operator": "ne", "value": "Ada"}},
     {"volcano.txt", "baking.html", "lighthouse-history.txt", "glacier-report.pdf"}),
    ({"year": {"operator": "gt", "value": 2022}}, {"baking.html", "rust.md"}),
    ({"year": {"operator": "gte", "value": 2022}}, {"volcano.txt", "baking.html", "rust.md"}),
    ({"year": {"operator": "lt", "value": 2021}}, {"lighthouse-history.txt", "glacier-report.pdf"}),
    ({"year": {"operator": "lte", "value": 2021}}, {"lighthouse-history.txt", "solar.md", "glacier-report.pdf"}),
    ({"topic": {"operator": "in", "value": ["food", "geology"]}}, {"baking.html", "volcano.txt"}),
    ({"topic": {"operator": "nin", "value": ["food", "geology", "history", "survey"]}}, {"solar.md", "rust.md"}),
    ({"draft": {"operator": "eq", "value": True}}, {"volcano.txt", "lighthouse-history.txt"}),
    ({"year": [{"operator": "gte", "value": 2021}, {"operator": "lt", "value": 2023}]}, {"solar.md", "volcano.txt"}),
    ({"author": {"operator": "eq", "value": "Ada"}, "year": {"operator": "gt", "value": 2022}, "other": None},
     {"rust.md"}),
]


@pytest.mark.parametrize(("custom_filters", "expected"), FILTER_CASES, ids=[str(c[0]) for c in FILTER_CASES])
def test_every_filter_operator(client: LlamaCloud, index: Any, file_ids: dict[str, str],
                               custom_filters: dict[str, Any], expected: set[str]) -> None:
    # Each leg alone must apply the filter in its engine: dense sees every chunk (top_k covers the
    # corpus); the sparse query names a word of every document.
    for query, dense_weight in (("the", 1.0), (EVERY_DOC_WORDS, 0.0)):
        out = client.retrieval.retrieve(index_id=index.id, query=query, top_k=100, custom_filters=custom_filters,
                                        vector_pipeline_weight=dense_weight,
                                        full_text_pipeline_weight=1.0 - dense_weight, rerank={"enabled": False})
        assert set(names(out.results, file_ids)) == expected, query


def test_file_filter(client: LlamaCloud, index: Any, file_ids: dict[str, str]) -> None:
    only = file_ids["volcano.txt"]
    out = client.retrieval.retrieve(index_id=index.id, query="solar panels", top_k=50,
                                    static_filters={"parsed_directory_file_id": {"operator": "eq", "value": only}})
    assert {r.static_fields.parsed_directory_file_id for r in out.results} == {only}
    out = client.retrieval.retrieve(index_id=index.id, query="solar panels", top_k=50,
                                    static_filters={"parsed_directory_file_id": {"operator": "nin", "value": [only]}})
    assert out.results and only not in {r.static_fields.parsed_directory_file_id for r in out.results}


def test_score_threshold_applies_to_score(client: LlamaCloud, index: Any) -> None:
    everything = client.retrieval.retrieve(index_id=index.id, query="volcano eruption ash", top_k=50,
                                           rerank={"enabled": False}).results
    threshold = everything[2].score
    kept = client.retrieval.retrieve(index_id=index.id, query="volcano eruption ash", top_k=50,
                                     score_threshold=threshold, rerank={"enabled": False}).results
    assert kept and all(r.score >= threshold for r in kept)
    assert len(kept) == sum(1 for r in everything if r.score >= threshold)


def test_find_by_exact_name_and_substring_with_pagination(client: LlamaCloud, index: Any) -> None:
    exact = list(client.retrieval.find(index_id=index.id, file_name="rust.md"))
    assert [f.file_name for f in exact] == ["rust.md"]
    sub = [f.file_name for f in client.retrieval.find(index_id=index.id, file_name_contains="O")]
    assert sorted(sub) == ["glacier-report.pdf", "lighthouse-history.txt", "solar.md", "volcano.txt"]
    paged = [f.file_name for f in client.retrieval.find(index_id=index.id, page_size=2)]
    assert sorted(paged) == sorted([*DOCS, "glacier-report.pdf"])
    first = client.retrieval.find(index_id=index.id, page_size=2)
    assert len(first.items) == 2 and first.next_page_token


def test_grep_offsets_and_context(client: LlamaCloud, index: Any, file_ids: dict[str, str]) -> None:
    fid = file_ids["lighthouse-history.txt"]
    text = client.retrieval.read(index_id=index.id, file_id=fid).content
    assert text == HISTORY
    matches = list(client.retrieval.grep(index_id=index.id, file_id=fid, pattern=r"Aurora \d+", context_chars=10,
                                         page_size=5))
    assert len(matches) == 12
    for m in matches:
        assert text[m.start_char:m.end_char].startswith("Aurora ")
        assert m.content == text[max(0, m.start_char - 10): m.end_char + 10]
    assert [m.start_char for m in matches] == sorted(m.start_char for m in matches)


def test_pdf_results_carry_their_pages(client: LlamaCloud, index: Any, file_ids: dict[str, str]) -> None:
    out = client.retrieval.retrieve(index_id=index.id, query="how far did the glacier retreat", top_k=1)
    top = out.results[0]
    assert top.static_fields.parsed_directory_file_id == file_ids["glacier-report.pdf"]
    assert "forty metres" in top.content
    sf = top.static_fields
    assert (sf.page_range_start, sf.page_range_end) == (1, 3)  # one chunk spans the three short pages
    text = client.retrieval.read(index_id=index.id, file_id=sf.parsed_directory_file_id).content
    assert text.index("forty metres") > text.index("expedition")
    volcano = client.retrieval.retrieve(index_id=index.id, query="volcano", top_k=1).results[0]
    assert volcano.static_fields.page_range_start is None  # text files have no pages


def test_seed_reference_shapes_are_served_too(stack: Stack, index: Any, file_ids: dict[str, str]) -> None:
    """``/files/search`` with ``limit`` -> ``{"files"}``; grep with ``limit`` answers ``matches`` and ``items``."""
    import httpx

    http = httpx.Client(base_url=stack.base_url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30)
    found = http.post("/api/v1/retrieval/files/search",
                      json={"index_id": index.id, "file_name_contains": "o", "limit": 2}).json()
    assert len(found["files"]) == 2
    assert all("o" in f["file_name"].lower() and file_ids[f["file_name"]] == f["file_id"] for f in found["files"])
    grep = http.post("/api/v1/retrieval/files/grep", json={
        "index_id": index.id, "file_id": file_ids["lighthouse-history.txt"], "pattern": "Aurora", "limit": 3,
    }).json()
    assert len(grep["matches"]) == 3 and grep["matches"] == grep["items"]
    assert grep["total_size"] == 12 and grep["next_page_token"]


def test_read_with_offset_and_length(client: LlamaCloud, index: Any, file_ids: dict[str, str]) -> None:
    fid = file_ids["lighthouse-history.txt"]
    assert client.retrieval.read(index_id=index.id, file_id=fid, offset=11, max_length=25).content == HISTORY[11:36]
    assert client.retrieval.read(index_id=index.id, file_id=fid, offset=len(HISTORY) + 5).content == ""


def test_unknown_index_and_file_are_404(client: LlamaCloud, index: Any, file_ids: dict[str, str]) -> None:
    with pytest.raises(llama_cloud.NotFoundError):
        client.retrieval.retrieve(index_id="no-such-index", query="x")
    with pytest.raises(llama_cloud.NotFoundError):
        list(client.retrieval.find(index_id="no-such-index"))
    with pytest.raises(llama_cloud.NotFoundError):
        client.retrieval.read(index_id=index.id, file_id="no-such-file")
    with pytest.raises(llama_cloud.NotFoundError):
        list(client.retrieval.grep(index_id=index.id, file_id="no-such-file", pattern="x"))
    with pytest.raises(llama_cloud.NotFoundError):
        list(client.retrieval.grep(index_id="no-such-index", file_id=file_ids["rust.md"], pattern="x"))


def test_bad_input_is_422_naming_the_field(client: LlamaCloud, index: Any, file_ids: dict[str, str]) -> None:
    with pytest.raises(llama_cloud.UnprocessableEntityError) as err:
        client.retrieval.retrieve(index_id=index.id, query="x",
                                  custom_filters={"year": {"operator": "like", "value": 1}})
    assert "custom_filters" in json.dumps(err.value.body)
    with pytest.raises(llama_cloud.UnprocessableEntityError) as err:
        client.retrieval.retrieve(index_id=index.id, query="x", vector_pipeline_weight=1.5)
    assert "vector_pipeline_weight" in json.dumps(err.value.body)
    with pytest.raises(llama_cloud.UnprocessableEntityError) as err:
        client.retrieval.retrieve(index_id=index.id, query="x",
                                  custom_filters={"year": {"operator": "gt", "value": "soon"}})
    assert "year" in json.dumps(err.value.body)
    with pytest.raises((llama_cloud.UnprocessableEntityError, llama_cloud.BadRequestError)) as err2:
        list(client.retrieval.grep(index_id=index.id, file_id=file_ids["rust.md"], pattern="(unclosed"))
    assert "pattern" in json.dumps(err2.value.body)
    assert err2.value.response.headers.get("x-should-retry") == "false"


def test_wrong_api_key_is_401(stack: Stack, index: Any) -> None:
    bad = LlamaCloud(api_key="not-a-key", base_url=stack.base_url, max_retries=0)
    with pytest.raises(llama_cloud.AuthenticationError):
        bad.retrieval.retrieve(index_id=index.id, query="x")


def test_default_project_is_listed(client: LlamaCloud) -> None:
    assert [p.name for p in client.projects.list()] == ["Default"]


def test_resync_after_a_change_serves_new_content_not_a_stale_cache(client: LlamaCloud, index: Any,
                                                                     stack: Stack) -> None:
    query = "which metal is used for the kettle"
    before = client.retrieval.retrieve(index_id=index.id, query=query, top_k=3)
    again = client.retrieval.retrieve(index_id=index.id, query=query, top_k=3)
    assert (again.model_extra or {}).get("cached") is True
    client.beta.directories.files.upload(
        index.source_directory_id,
        upload_file=("kettle.txt", io.BytesIO(b"The kettle is made of copper, a metal that conducts heat well.")),
        metadata=json.dumps({"year": 2025, "author": "Kim", "topic": "kitchen"}),
    )
    client.indexes.sync(index.id)
    wait_synced(client, index.id)
    after = client.retrieval.retrieve(index_id=index.id, query=query, top_k=3)
    assert (after.model_extra or {}).get("cached") is False
    assert "copper" in after.results[0].content
    assert before.results[0].content != after.results[0].content


def test_the_default_reranker_runs_no_model_per_passage(client: LlamaCloud, index: Any, stack: Stack) -> None:
    """Rerank on (the default) scores the token vectors dense stored with each chunk: with the
    rerank service frozen the answer is still reranked, not degraded, and the chunk the test
    above re-synced ranks first from the vectors rewritten with it."""
    stack.signal("rerank", signal.SIGSTOP)
    try:
        out = client.retrieval.retrieve(index_id=index.id, query="what metal is the kettle made from", top_k=3)
    finally:
        stack.signal("rerank", signal.SIGCONT)
    assert not (out.model_extra or {}).get("degraded"), out.model_extra
    assert all(r.rerank_score is not None for r in out.results)
    assert "copper" in out.results[0].content


def test_every_process_survives_the_suite(stack: Stack) -> None:
    assert stack.failed() == []
    assert not Path(stack.data_dir / "api_key").exists()  # a key given by the caller is not written to disk


def test_page_screenshots_as_attachments(client: LlamaCloud, index: Any, file_ids: dict[str, str]) -> None:
    """A file uploaded once (``files.create``), added to a directory by id, indexed with page
    screenshots kept: PDF results name their pages' images, and a presigned URL serves the PNG."""
    uploaded = client.files.create(file=("survey.pdf", io.BytesIO(REPORT_PDF), "application/pdf"), purpose="user_data")
    directory = client.beta.directories.create(name="e2e-screenshots")
    added = client.beta.directories.files.add(directory.id, file_id=uploaded.id, metadata={"kind": "survey"})
    assert added.display_name == "survey.pdf"
    assert client.beta.directories.files.get(added.id, directory_id=directory.id).id == added.id
    created = client.indexes.create(source_directory_id=directory.id, name="e2e-shots",
                                    store_attachments=["page_screenshot"])
    client.indexes.sync(created.id)
    wait_synced(client, created.id)
    out = client.retrieval.retrieve(index_id=created.id, query="glacier retreated meltwater lakes", top_k=3)
    top = out.results[0]
    assert top.metadata == {"kind": "survey"}
    sf = top.static_fields
    pages = range(sf.page_range_start - 1, sf.page_range_end)
    assert [a.attachment_name for a in sf.attachments] == [f"page_{p}.png" for p in pages]
    attachment = sf.attachments[0]
    assert attachment.source_id == sf.parsed_directory_file_id and attachment.type == "page_screenshot"
    presigned = client.beta.attachments.get(attachment.attachment_name, source_id=attachment.source_id)
    image = httpx.get(presigned.url, timeout=30)  # no API key: the signature stands in for it
    assert image.status_code == 200 and image.content.startswith(b"\x89PNG")
    tampered = httpx.get(presigned.url.replace("page_", "page_1"), timeout=30)
    assert tampered.status_code == 403
    # An index created without store_attachments keeps no images of the same PDF.
    plain = client.retrieval.retrieve(index_id=index.id, query="glacier retreated meltwater lakes", top_k=1)
    assert names(plain.results, file_ids) == ["glacier-report.pdf"]
    assert plain.results[0].static_fields.attachments is None
