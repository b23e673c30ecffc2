"""The OpenAPI document and its viewers, fit for generating clients and usable air-gapped.

- Operation ids are the route functions' names (or the explicit ``operation_id`` of a route), so
  generated clients get stable method names; a test checks they are unique.
- The bearer security scheme is declared once and applies to every operation, so Swagger UI's
  "Authorize" and "Try it out" send the API key.
- The error answers every route can give (401, 404, 409, 413, 422, 429, 503, 504) are documented
  with their body.
- Swagger UI and ReDoc load their scripts from Quarry itself (the assets packaged by
  ``fastapi-offline``), never from a CDN.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import fastapi_offline
from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

ASSETS = Path(fastapi_offline.__file__).parent / "static"
ASSETS_PATH = "/docs-assets"
SCHEME = "bearerAuth"


class ErrorBody(BaseModel):
    """Every error answer: ``detail`` is a message, or FastAPI's list of field errors (422)."""

    detail: str | list[dict[str, Any]] = Field(description="What went wrong; for 422, one entry per field with its loc")


_ERRORS = {
    401: "Missing, unknown, revoked or expired API key",
    403: "The key may not call this route (admin routes need an admin key)",
    404: "No such object in the caller's project",
    409: "Conflict: a name in use, a job in the way, or a damaged index (rebuild it)",
    413: "Request body over the size limit",
    422: "Invalid input; `detail[].loc` names the field",
    429: "Over the key's rate limit; retry after `Retry-After` seconds",
    503: "A backend is down or a stage is saturated; retry after `Retry-After` seconds",
    504: "The request's deadline passed",
}

#: Merged into every router's responses.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": text} for code, text in _ERRORS.items()
}


def operation_id(route: APIRoute) -> str:
    """A route without an explicit id is named after its function."""
    return route.name


def install(app: FastAPI) -> None:
    """Self-hosted docs at /docs and /redoc, and the schema with the security scheme."""
    app.mount(ASSETS_PATH, StaticFiles(directory=ASSETS), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json", title=f"{app.title} API",
            swagger_js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js", swagger_css_url=f"{ASSETS_PATH}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS_PATH}/favicon.png",
            swagger_ui_parameters={"persistAuthorization": True},
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(openapi_url="/openapi.json", title=f"{app.title} API",
                              redoc_js_url=f"{ASSETS_PATH}/redoc.standalone.js",
                              redoc_favicon_url=f"{ASSETS_PATH}/favicon.png", with_google_fonts=False)

    def schema() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            spec.setdefault("components", {}).setdefault("securitySchemes", {})[SCHEME] = {
                "type": "http", "scheme": "bearer",
                "description": "An API key of the project: `Authorization: Bearer <key>`",
            }
            spec["security"] = [{SCHEME: []}]
            app.openapi_schema = spec
        return app.openapi_schema

    app.openapi = schema  # type: ignore[method-assign]
