"""The OpenAPI document is fit for generating clients, and its viewers work without a CDN."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from gateway.app import create_app
from gateway.settings import GatewaySettings


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(GatewaySettings())
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as http:
            yield http


def _operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(path, method, op) for path, ops in spec["paths"].items() for method, op in ops.items()]


async def test_operation_ids_are_unique_and_explicit(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    ids = [op["operationId"] for _, _, op in _operations(spec)]
    assert len(ids) > 40
    assert not [i for i, n in Counter(ids).items() if n > 1]
    # Names a generated client can use: no path or method mangled in.
    assert all("api_v1" not in i and not i.endswith(("_post", "_get", "_delete")) for i in ids)
    assert {"retrieve", "admin_create_key", "admin_delete_project"} <= set(ids)


async def test_bearer_security_and_documented_errors(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    assert spec["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http", "scheme": "bearer", "description": "An API key of the project: `Authorization: Bearer <key>`"}
    assert spec["security"] == [{"bearerAuth": []}]
    for path, method, op in _operations(spec):
        assert {"401", "404", "409", "429", "503"} <= set(op["responses"]), (method, path)
        assert op["responses"]["429"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody")
    signed = spec["paths"]["/api/v1/beta/attachments/{name}/content"]["get"]
    assert signed["security"] == []  # a signed URL, opened without a key


async def test_request_fields_are_described_with_an_example(client: httpx.AsyncClient) -> None:
    schemas = (await client.get("/openapi.json")).json()["components"]["schemas"]
    retrieve = schemas["RetrieveRequest"]
    assert retrieve["examples"][0]["query"]
    assert all("description" in f or "$ref" in f or ("anyOf" in f and any("$ref" in a for a in f["anyOf"]))
               for f in retrieve["properties"].values())


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_docs_load_their_assets_from_quarry(client: httpx.AsyncClient, page: str) -> None:
    html = (await client.get(page)).text
    assert "cdn." not in html and "fonts.googleapis" not in html
    assets = [a for a in ("/docs-assets/swagger-ui-bundle.js", "/docs-assets/swagger-ui.css",
                          "/docs-assets/redoc.standalone.js") if a in html]
    assert assets
    for asset in assets:
        response = await client.get(asset)
        assert response.status_code == 200 and len(response.content) > 100_000
