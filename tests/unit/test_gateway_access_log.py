"""The gateway's access-log middleware: request ids in and out, one log line per request."""

from __future__ import annotations

import logging
import re

import httpx
import pytest

from gateway.app import create_app
from gateway.settings import GatewaySettings


async def _get(headers: dict[str, str], path: str = "/healthz") -> httpx.Response:
    app = create_app(GatewaySettings())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            return await client.get(path, headers=headers)


async def test_a_plain_request_id_is_echoed_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="gateway.access")
    response = await _get({"x-request-id": "trace-42.a"}, path="/api/v1/nothing-here")
    assert response.status_code == 404
    assert response.headers["x-request-id"] == "trace-42.a"
    (record,) = [r for r in caplog.records if r.name == "gateway.access"]
    assert record.request_id == "trace-42.a"  # type: ignore[attr-defined]
    assert record.getMessage().startswith("GET /api/v1/nothing-here 404")


@pytest.mark.parametrize("given", ["", "has space", "x" * 65, "semi;colon"])
async def test_other_request_ids_are_replaced(given: str) -> None:
    response = await _get({"x-request-id": given} if given else {})
    assert re.fullmatch(r"[0-9a-f]{16}", response.headers["x-request-id"])


async def test_health_checks_are_not_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="gateway.access")
    assert (await _get({})).status_code == 200
    assert not [r for r in caplog.records if r.name == "gateway.access"]
