"""Hostile but well-formed input gets a 422 naming the field, never a 500 (regressions of what a
hostile user and schemathesis found): deep filter trees, long ``contains`` values, lone UTF-16
surrogates in keys and values, integers beyond what the services carry.

The app runs in process with the caller's project given (no files service): every case here is
refused before any backend would be called.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from gateway.app import create_app
from gateway.auth import current_project
from gateway.settings import GatewaySettings
from services._proto.quarry.files.v1 import files_pb2
from services.common.domain import MAX_CONTAINS_BYTES, MAX_FILTER_CONDITIONS, MAX_FILTER_DEPTH

RETRIEVE = "/api/v1/pipelines/p-1/retrieve"


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(GatewaySettings())
    app.dependency_overrides[current_project] = lambda: files_pb2.Project(id="project-1", name="Default")
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:
            yield http


def _nested(depth: int, condition: str = "and") -> str:
    tree = '{"key": "a", "value": "b", "operator": "=="}'
    for _ in range(depth):
        tree = f'{{"filters": [{tree}, {{"key": "c", "value": 1}}], "condition": "{condition}"}}'
    return tree


def _detail(response: httpx.Response) -> list[dict[str, Any]]:
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, list) and detail
    return detail


@pytest.mark.parametrize("condition", ["and", "or", "not"])
@pytest.mark.parametrize("depth", [MAX_FILTER_DEPTH + 1, 50, 200, 450])
async def test_filter_trees_deeper_than_the_bound_are_refused(client: httpx.AsyncClient, depth: int,
                                                              condition: str) -> None:
    body = f'{{"query": "q", "search_filters": {_nested(depth, condition)}}}'
    detail = _detail(await client.post(RETRIEVE, content=body, headers={"content-type": "application/json"}))
    assert detail[0]["loc"][:2] == ["body", "search_filters"]
    assert f"deeper than {MAX_FILTER_DEPTH}" in detail[0]["msg"]


async def test_a_tree_at_the_bound_is_not_refused_for_its_depth(client: httpx.AsyncClient) -> None:
    body = f'{{"query": "q", "search_filters": {_nested(MAX_FILTER_DEPTH - 1)}}}'
    response = await client.post(RETRIEVE, content=body, headers={"content-type": "application/json"})
    assert response.status_code == 503, response.text  # valid: it went on to the catalog, which is not running


async def test_more_conditions_than_the_bound_are_refused(client: httpx.AsyncClient) -> None:
    filters = [{"key": f"k{i}", "value": i} for i in range(MAX_FILTER_CONDITIONS + 1)]
    detail = _detail(await client.post(RETRIEVE, json={"query": "q", "search_filters": {"filters": filters}}))
    assert detail[0]["loc"] == ["body", "search_filters", "filters", MAX_FILTER_CONDITIONS]
    custom = {f"k{i}": {"operator": "eq", "value": i} for i in range(MAX_FILTER_CONDITIONS + 1)}
    detail = _detail(await client.post("/api/v1/retrieval/retrieve",
                                       json={"index_id": "i", "query": "q", "custom_filters": custom}))
    assert detail[0]["loc"] == ["body", "custom_filters"]


@pytest.mark.parametrize("value", ["v" * 500, "ü" * 70, "😀" * 40])
async def test_a_contains_value_over_the_bound_is_refused(client: httpx.AsyncClient, value: str) -> None:
    assert len(value.encode()) > MAX_CONTAINS_BYTES
    body = {"query": "q", "search_filters": {"filters": [{"key": "a", "value": value, "operator": "contains"}]}}
    detail = _detail(await client.post(RETRIEVE, json=body))
    assert detail[0]["loc"] == ["body", "search_filters", "filters", 0, "value"]
    assert f"{MAX_CONTAINS_BYTES} bytes" in detail[0]["msg"]


async def test_long_keys_and_values_and_too_many_values_are_refused(client: httpx.AsyncClient) -> None:
    cases = [
        ({"key": "k" * 200, "value": 1}, ["body", "search_filters", "filters", 0, "key"]),
        ({"key": "a", "value": "x" * 9000}, ["body", "search_filters", "filters", 0, "value"]),
        ({"key": "a", "value": list(range(2000)), "operator": "in"}, ["body", "search_filters", "filters", 0, "value"]),
    ]
    for spec, loc in cases:
        detail = _detail(await client.post(RETRIEVE, json={"query": "q", "search_filters": {"filters": [spec]}}))
        assert detail[0]["loc"] == loc


SURROGATES = [
    (RETRIEVE, '{"query": "q", "search_filters": {"filters": [{"key": "\\ud800", "value": "v"}]}}',
     ["body", "search_filters", "filters", 0, "key"]),
    (RETRIEVE, '{"query": "q", "search_filters": {"filters": [{"key": "a", "value": "x\\udfff"}]}}',
     ["body", "search_filters", "filters", 0, "value"]),
    (RETRIEVE, '{"query": "\\ud800"}', ["body", "query"]),
    ("/api/v1/retrieval/retrieve", '{"index_id": "i", "query": "q", "custom_filters": {"\\udc00": '
     '{"operator": "eq", "value": 1}}}', ["body", "custom_filters", "\\udc00"]),
    ("/api/v1/pipelines/p-1/documents", '[{"text": "t", "metadata": {"\\ud83d": 1}}]',
     ["body", 0, "metadata", "\\ud83d"]),
    ("/api/v1/pipelines/p-1/documents", '[{"text": "t", "metadata": {"k": ["ok", "\\ude00"]}}]',
     ["body", 0, "metadata", "k", 1]),
]


@pytest.mark.parametrize(("path", "body", "loc"), SURROGATES, ids=[str(c[2]) for c in SURROGATES])
async def test_a_lone_surrogate_anywhere_in_a_json_body_is_refused(client: httpx.AsyncClient, path: str, body: str,
                                                                   loc: list[Any]) -> None:
    detail = _detail(await client.post(path, content=body, headers={"content-type": "application/json"}))
    assert detail[0]["loc"] == loc and detail[0]["type"] == "string_unicode"


async def test_a_valid_surrogate_pair_is_an_ordinary_character(client: httpx.AsyncClient) -> None:
    body = '{"query": "q", "search_filters": {"filters": [{"key": "\\ud83d\\ude00", "value": "x"}]}}'
    response = await client.post(RETRIEVE, content=body, headers={"content-type": "application/json"})
    assert response.status_code == 503, response.text


async def test_a_surrogate_in_upload_metadata_is_refused(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/v1/beta/directories/d-1/files/upload",
                                 files={"upload_file": ("a.txt", b"text")}, data={"metadata": '{"\\ud800": 1}'})
    assert _detail(response)[0]["loc"] == ["body", "metadata", "\\ud800"]


@pytest.mark.parametrize(("method", "path", "body"), [
    ("POST", "/api/v1/retrieval/files/find", {"index_id": "i", "page_size": 2**40}),
    ("POST", "/api/v1/retrieval/files/search", {"index_id": "i", "limit": 2**50}),
    ("POST", "/api/v1/retrieval/files/grep", {"index_id": "i", "file_id": "f", "pattern": "x", "page_size": 2**59}),
    ("POST", "/api/v1/retrieval/files/read", {"index_id": "i", "file_id": "f", "max_length": 10**20}),
    ("GET", "/api/v1/indexes?page_size=1246415376602000640", None),
    ("GET", "/api/v1/pipelines/p-1/documents?skip=99999999999999", None),
])
async def test_integers_beyond_32_bits_are_refused(client: httpx.AsyncClient, method: str, path: str,
                                                   body: dict[str, Any] | None) -> None:
    response = await client.request(method, path, json=body)
    assert response.status_code == 422, response.text


async def test_a_page_index_beyond_32_bits_is_not_found(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/files/f/page_screenshots/245466421766019904")
    assert response.status_code == 404
