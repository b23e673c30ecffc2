"""A pipeline's ``embedding_config`` and ``transform_config`` (issue 14): what the gateway accepts
and refuses, what it stores for the ingest worker, how the worker turns that into chunking, how the
files service decides that a chunking change re-plans a file, and that the pipeline Quarry returns
passes llama-cloud's strict response validation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from llama_cloud import LlamaCloud

from gateway import pipelines as use
from gateway.routes.pipelines import pipeline
from services._proto.quarry.files.v1 import files_pb2
from services.files.adapters.sql import SqlCatalog
from services.files.domain import chunking_key
from services.files.service import FilesService
from services.ingest.chunking import MAX_CHUNK_TOKENS, ChunkingOptions, chunk_text, piece_tokenizer
from services.ingest.settings import IngestSettings
from services.ingest.worker import IndexConfig

# ---- embedding_config ----------------------------------------------------------------------


@pytest.mark.parametrize("raw", [
    None,
    {},
    {"type": "HUGGINGFACE_API_EMBEDDING", "component": {"model_name": "sentence-transformers/all-MiniLM-L6-v2"}},
    {"type": "HUGGINGFACE_API_EMBEDDING", "component": {"model_name": "all-MiniLM-L6-v2", "embed_batch_size": 8}},
    {"type": "HUGGINGFACE_API_EMBEDDING", "component": {"model_name": " SENTENCE-TRANSFORMERS/all-minilm-l6-v2 "}},
    {"type": "HUGGINGFACE_API_EMBEDDING", "component": {"model_name": None}},
    {"type": "HUGGINGFACE_API_EMBEDDING"},
    {"type": "QUARRY_EMBEDDING", "component": {"model_name": "all-MiniLM-L6-v2 (int8 ONNX)"}},
])
def test_embedding_configs_naming_quarrys_model_are_accepted(raw: dict[str, Any] | None) -> None:
    assert use.embedding_config(raw) == use.EMBEDDING_CONFIG


@pytest.mark.parametrize(("raw", "loc"), [
    ({"type": "OPENAI_EMBEDDING", "component": {"model_name": "text-embedding-3-small"}}, ("type",)),
    ({"type": "MANAGED_OPENAI_EMBEDDING", "component": {"model_name": "openai-text-embedding-3-small"}}, ("type",)),
    ({"type": "COHERE_EMBEDDING", "component": {}}, ("type",)),
    ({"component": {"model_name": "all-MiniLM-L6-v2"}}, ("type",)),
    ({"type": "HUGGINGFACE_API_EMBEDDING", "component": {"model_name": "BAAI/bge-small-en-v1.5"}},
     ("component", "model_name")),
    ({"type": "HUGGINGFACE_API_EMBEDDING", "component": {"model_name": 3}}, ("component", "model_name")),
    ({"type": "HUGGINGFACE_API_EMBEDDING", "component": "all-MiniLM-L6-v2"}, ("component",)),
])
def test_a_model_quarry_cannot_serve_is_refused_naming_the_field(raw: dict[str, Any], loc: tuple[str, ...]) -> None:
    with pytest.raises(use.ConfigError) as caught:
        use.embedding_config(raw)
    assert caught.value.loc == ("body", "embedding_config", *loc)
    assert "sentence-transformers/all-MiniLM-L6-v2" in caught.value.msg  # says what Quarry serves


# ---- transform_config ------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "stored"), [
    (None, {}),
    ({}, {}),
    ({"mode": "auto"}, {}),
    ({"mode": "auto", "chunk_size": 64, "chunk_overlap": 8}, {"chunk_size": 64, "chunk_overlap": 8}),
    ({"chunk_size": 254}, {"chunk_size": 254}),
    ({"mode": "auto", "chunk_size": None, "chunk_overlap": 0}, {"chunk_overlap": 0}),
    ({"mode": "advanced", "chunking_config": {"mode": "token", "chunk_size": 100, "chunk_overlap": 10,
                                              "separator": " "}},
     {"chunk_size": 100, "chunk_overlap": 10}),
    ({"mode": "advanced", "segmentation_config": {"mode": "none"},
      "chunking_config": {"mode": "sentence", "chunk_size": 50, "paragraph_separator": "\n\n\n"}},
     {"chunk_size": 50}),
    ({"chunking_config": {"chunk_size": 32}}, {"chunk_size": 32}),
    ({"mode": "advanced"}, {}),
])
def test_transform_config_becomes_the_index_chunking(raw: dict[str, Any] | None, stored: dict[str, int]) -> None:
    assert use.chunking(raw) == stored


@pytest.mark.parametrize(("raw", "loc", "says"), [
    ({"mode": "auto", "chunk_size": 1024, "chunk_overlap": 200}, ("chunk_size",), "8..254"),
    ({"chunk_size": 255}, ("chunk_size",), "254"),
    ({"chunk_size": 4}, ("chunk_size",), "8..254"),
    ({"chunk_size": 64.5}, ("chunk_size",), "integer"),
    ({"chunk_size": True}, ("chunk_size",), "integer"),
    ({"chunk_size": 64, "chunk_overlap": 32}, ("chunk_overlap",), "at most 31"),
    ({"chunk_overlap": 100}, ("chunk_overlap",), "the default"),
    ({"chunk_size": 64, "chunk_overlap": -1}, ("chunk_overlap",), "below half"),
    ({"mode": "magic"}, ("mode",), "'auto' or 'advanced'"),
    ({"mode": "advanced", "chunking_config": {"mode": "character", "chunk_size": 100}},
     ("chunking_config", "mode"), "tokens"),
    ({"mode": "advanced", "chunking_config": {"mode": "semantic", "buffer_size": 1}}, ("chunking_config", "mode"),
     "not supported"),
    ({"mode": "advanced", "chunking_config": {"mode": "none"}}, ("chunking_config", "mode"), "not supported"),
    ({"mode": "advanced", "chunking_config": {"mode": "token", "chunk_size": 512}},
     ("chunking_config", "chunk_size"), "254"),
    ({"mode": "advanced", "segmentation_config": {"mode": "page"}}, ("segmentation_config", "mode"), "'none'"),
    ({"mode": "advanced", "chunking_config": "token"}, ("chunking_config",), "object"),
])
def test_chunking_quarry_cannot_do_is_refused_naming_the_field(raw: dict[str, Any], loc: tuple[str, ...],
                                                               says: str) -> None:
    with pytest.raises(use.ConfigError) as caught:
        use.chunking(raw)
    assert caught.value.loc == ("body", "transform_config", *loc)
    assert says in caught.value.msg


def test_the_gateway_limits_are_the_ingest_workers() -> None:
    assert use.MAX_CHUNK_TOKENS == MAX_CHUNK_TOKENS
    assert use.DEFAULT_CHUNK_TOKENS == ChunkingOptions().chunk_size == IngestSettings.model_fields["chunk_size"].default
    assert IngestSettings.model_fields["chunk_size"].metadata  # ge/le of the settings: the same range
    limits = {type(m).__name__: m for m in IngestSettings.model_fields["chunk_size"].metadata}
    assert limits["Ge"].ge == use.MIN_CHUNK_TOKENS and limits["Le"].le == use.MAX_CHUNK_TOKENS


# ---- the worker's side -----------------------------------------------------------------------


@pytest.mark.parametrize(("config", "expected"), [
    ({}, (200, 40)),
    ({"chunking": {}}, (200, 40)),
    ({"chunking": {"chunk_size": 64, "chunk_overlap": 8}}, (64, 8)),
    ({"chunking": {"chunk_size": 100}}, (100, 20)),  # the defaults' overlap ratio
    ({"chunking": {"chunk_overlap": 0}}, (200, 0)),
    ({"chunking": {"chunk_size": 1000, "chunk_overlap": 900}}, (254, 126)),  # brought into range
    ({"chunking": {"chunk_size": "big"}}, (200, 40)),  # not an integer: the default
    ({"chunking": "small"}, (200, 40)),
])
def test_the_index_config_chooses_the_chunking(config: dict[str, Any], expected: tuple[int, int]) -> None:
    options = IndexConfig.from_json(json.dumps(config)).chunking(ChunkingOptions(200, 40))
    assert (options.chunk_size, options.chunk_overlap) == expected


def test_an_unset_chunking_keeps_the_workers_own_options() -> None:
    defaults = ChunkingOptions(120, 10)
    assert IndexConfig.from_json("{}").chunking(defaults) is defaults
    assert IndexConfig.from_json('{"chunking": {"chunk_overlap": 50}}').chunking(defaults) == ChunkingOptions(120, 50)
    assert IndexConfig.from_json('{"chunking": {"chunk_overlap": 80}}').chunking(defaults) == ChunkingOptions(120, 59)


def test_a_smaller_chunk_size_makes_more_smaller_chunks() -> None:
    text = " ".join(f"Sentence {i} tells of the lighthouse keeper and the storm." for i in range(60))
    tok = piece_tokenizer()
    default = chunk_text(text, options=ChunkingOptions(), tokenizer=tok)
    small = chunk_text(text, options=IndexConfig.from_json(
        '{"chunking": {"chunk_size": 32, "chunk_overlap": 4}}').chunking(ChunkingOptions()), tokenizer=tok)
    assert len(small) > 3 * len(default)
    assert max(c.token_count for c in small) <= 32 < max(c.token_count for c in default)


# ---- the files service: a chunking change re-plans ------------------------------------------


def test_chunking_key() -> None:
    assert chunking_key("") == chunking_key("{}") == chunking_key('{"chunking": {}}') == chunking_key("nope") == ""
    assert chunking_key('{"chunking": {"chunk_size": 64, "chunk_overlap": 8}, "x": 1}') == chunking_key(
        '{"page_screenshots": true, "chunking": {"chunk_overlap": 8, "chunk_size": 64}}') != ""


async def _sync(svc: FilesService, project_id: str, index_id: str, *, report_config: bool = True) -> list[str]:
    """Start a sync and work it as a worker would; the items' actions."""
    job = await svc.start_sync(project_id, index_id)
    if job.status == "succeeded":
        return []
    claimed = await svc.claim_job("w", 30)
    assert claimed is not None and claimed.id == job.id
    actions = []
    for item in await svc.list_job_items(job.id):
        actions.append(item.action)
        prepared = await svc.prepare_parsed_file(index_id, item.source_file_id)
        await svc.complete_job_item(job.id, "w", item.source_file_id, text="some text", chunk_count=1,
                                    index_config_json=prepared.index_config_json if report_config else "")
    await svc.finish_job(job.id, "w", "succeeded")
    return actions


@pytest.mark.parametrize("report_config", [True, False])
async def test_a_sync_after_a_chunking_change_plans_every_file_again(tmp_path: Path, report_config: bool) -> None:
    catalog = SqlCatalog.from_url(f"sqlite+aiosqlite:///{tmp_path}/catalog.db")
    await catalog.start()
    try:
        svc = FilesService(catalog)
        project = await svc.ensure_project("Default")
        config = {"page_screenshots": False, "chunking": {}, "pipeline": {}}
        index = await svc.upsert_pipeline(project.id, "p", json.dumps(config))
        for name in ("a.txt", "b.txt"):
            await svc.upload_file(project.id, index.source_directory_id, display_name=name, content=b"hello")
        assert await _sync(svc, project.id, index.id, report_config=report_config) == ["upsert", "upsert"]
        assert await _sync(svc, project.id, index.id, report_config=report_config) == []  # unchanged: skipped
        # Other settings change: nothing to re-chunk.
        await svc.upsert_pipeline(project.id, "p", json.dumps({**config, "pipeline": {"pipeline_type": "MANAGED"}}))
        assert await _sync(svc, project.id, index.id, report_config=report_config) == []
        smaller = {**config, "chunking": {"chunk_size": 64}}
        await svc.upsert_pipeline(project.id, "p", json.dumps(smaller))
        assert await _sync(svc, project.id, index.id, report_config=report_config) == ["upsert", "upsert"]
        assert await _sync(svc, project.id, index.id, report_config=report_config) == []
        await svc.upsert_pipeline(project.id, "p", json.dumps(config))  # back to the defaults
        assert await _sync(svc, project.id, index.id, report_config=report_config) == ["upsert", "upsert"]
    finally:
        await catalog.close()


async def test_a_file_chunked_with_an_older_config_is_planned_again(tmp_path: Path) -> None:
    """The config changed while the file's item was in flight: what the worker reports counts."""
    catalog = SqlCatalog.from_url(f"sqlite+aiosqlite:///{tmp_path}/catalog.db")
    await catalog.start()
    try:
        svc = FilesService(catalog)
        project = await svc.ensure_project("Default")
        index = await svc.upsert_pipeline(project.id, "p", '{"chunking": {}}')
        await svc.upload_file(project.id, index.source_directory_id, display_name="a.txt", content=b"hello")
        job = await svc.start_sync(project.id, index.id)
        assert await svc.claim_job("w", 30) is not None
        [item] = await svc.list_job_items(job.id)
        prepared = await svc.prepare_parsed_file(index.id, item.source_file_id)
        await svc.upsert_pipeline(project.id, "p", '{"chunking": {"chunk_size": 64}}')
        await svc.complete_job_item(job.id, "w", item.source_file_id, text="hello", chunk_count=1,
                                    index_config_json=prepared.index_config_json)
        await svc.finish_job(job.id, "w", "succeeded")
        assert await _sync(svc, project.id, index.id) == ["upsert"]
    finally:
        await catalog.close()


# ---- the pipeline as llama-cloud reads it ----------------------------------------------------


def _index(config: dict[str, Any]) -> files_pb2.Index:
    return files_pb2.Index(id="pipe-1", name="notes", project_id="proj-1", kind="pipeline",
                           created_at="2025-01-01T00:00:00Z", updated_at="2025-01-01T00:00:00Z",
                           config_json=json.dumps(config))


@pytest.mark.parametrize("stored", [
    {},
    {"pipeline": {"transform_config": {"mode": "auto", "chunk_size": 64, "chunk_overlap": 8},
                  "embedding_config": use.EMBEDDING_CONFIG, "llama_parse_parameters": {"take_screenshot": True}}},
    {"pipeline": {"transform_config": {"mode": "advanced", "chunking_config": {"mode": "token", "chunk_size": 64}}}},
    # Stored by an older Quarry, which echoed whatever the request said.
    {"pipeline": {"embedding_config": {"type": "OPENAI_EMBEDDING", "component": {"model_name": "x"}}}},
])
def test_the_pipeline_passes_strict_response_validation(stored: dict[str, Any]) -> None:
    body = pipeline(_index(stored)).model_dump(mode="json")

    def answer(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/api/v1/pipelines/pipe-1"
        return httpx.Response(200, json=body)

    client = LlamaCloud(api_key="k", base_url="http://quarry.test", _strict_response_validation=True,
                        http_client=httpx.Client(transport=httpx.MockTransport(answer)))
    with pytest.warns(DeprecationWarning):  # the 2.x SDK marks /pipelines deprecated
        got = client.pipelines.get("pipe-1")
    assert got.embedding_config.type == "HUGGINGFACE_API_EMBEDDING"
    assert got.embedding_config.component is not None
    assert got.embedding_config.component.api_model_name == "sentence-transformers/all-MiniLM-L6-v2"
