"""Page screenshots and attachments.

``GET /api/v1/files/{file_id}/page_screenshots/{page_index}`` serves the PNG the ingest worker
rendered (file_id is a parsed file id, as image nodes and retrieval results carry it; page
index 0-based). v2 results name the same images in ``static_fields.attachments``
(``page_<index>.png``, ``source_id`` = the file id); ``GET /api/v1/beta/attachments/{name}``
turns one into a presigned URL: an HMAC-signed, expiring link that needs no API key.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from gateway.errors import error_response
from gateway.models import INT32_MAX, _Response
from gateway.routes.deps import Project
from gateway.settings import GatewaySettings
from services._proto.quarry.files.v1 import files_pb2

router = APIRouter(prefix="/api/v1", tags=["media"])

ATTACHMENT_TYPE = "page_screenshot"
_NAME = re.compile(r"page_(\d{1,6})\.png")


class PresignedUrl(_Response):
    url: str
    expires_at: str
    form_fields: dict[str, str] | None = None


def attachment_name(page_index: int) -> str:
    return f"page_{page_index}.png"


def _key(request: Request) -> bytes:
    settings: GatewaySettings = request.app.state.settings
    if settings.signing_key is not None:
        return settings.signing_key.get_secret_value().encode()
    state = request.app.state
    if not hasattr(state, "signing_key"):
        state.signing_key = secrets.token_bytes(32)
    return state.signing_key  # type: ignore[no-any-return]


def _signature(key: bytes, project_id: str, source_id: str, name: str, expires: int) -> str:
    message = f"{project_id}\n{source_id}\n{name}\n{expires}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


async def _image(request: Request, project_id: str, file_id: str, page_index: int) -> Response:
    settings: GatewaySettings = request.app.state.settings
    image = await request.app.state.backends.files.GetPageImage(
        files_pb2.GetPageImageRequest(project_id=project_id, file_id=file_id, page_index=page_index),
        timeout=settings.catalog_timeout_seconds,
    )
    return Response(image.content, media_type=image.content_type or "image/png",
                    headers={"cache-control": "private, max-age=3600"})


@router.get("/files/{file_id}/page_screenshots/{page_index}")
async def page_screenshot(
    file_id: str, page_index: int, request: Request, project: Project, project_id: str | None = None
) -> Response:
    """The screenshot of one page (PNG bytes)."""
    if project_id and project_id != project.id:
        return error_response(404, f"project {project_id} not found")
    if not 0 <= page_index <= INT32_MAX:
        return error_response(404, f"no page {page_index}")
    return await _image(request, project.id, file_id, page_index)


@router.get("/files/{file_id}/page-figures/{page_index}/{figure_name}")
async def page_figure(file_id: str, page_index: int, figure_name: str, project: Project) -> Response:
    return error_response(404, "Quarry does not extract page figures; page screenshots are available")


@router.get("/beta/attachments/{name}", response_model=PresignedUrl)
async def attachment_url(
    name: str, request: Request, project: Project, source_id: Annotated[str, Query(min_length=1)]
) -> Response | PresignedUrl:
    """A presigned URL for an attachment named in ``static_fields.attachments``."""
    match = _NAME.fullmatch(name)
    if match is None:
        return error_response(404, f"attachment {name!r} not found")
    settings: GatewaySettings = request.app.state.settings
    # Fails with 404 now rather than hand out a link to nothing.
    await request.app.state.backends.files.ListPageImages(
        files_pb2.ListPageImagesRequest(project_id=project.id, file_ids=[source_id]),
        timeout=settings.catalog_timeout_seconds,
    )
    expires = int(time.time()) + settings.attachment_url_ttl_seconds
    query = urlencode({
        "source_id": source_id, "project_id": project.id, "expires": expires,
        "signature": _signature(_key(request), project.id, source_id, name, expires),
    })
    base = (settings.public_url or str(request.base_url)).rstrip("/")
    return PresignedUrl(
        url=f"{base}/api/v1/beta/attachments/{name}/content?{query}",
        expires_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expires)),
    )


@router.get("/beta/attachments/{name}/content", openapi_extra={"security": []})
async def attachment_content(
    name: str, request: Request, source_id: str, project_id: str, expires: int, signature: str
) -> Response:
    """The bytes behind a presigned URL; the signature stands in for the API key."""
    match = _NAME.fullmatch(name)
    expected = _signature(_key(request), project_id, source_id, name, expires)
    if match is None or not hmac.compare_digest(expected, signature) or int(match.group(1)) > INT32_MAX:
        return error_response(403, "invalid attachment signature")
    if expires < time.time():
        return error_response(403, "attachment URL expired")
    return await _image(request, project_id, source_id, int(match.group(1)))
