"""What every route module reaches through the request: settings, the files stub, deadlines,
and the caller's project."""

from __future__ import annotations

import logging
from typing import Annotated

import grpc
from fastapi import Depends, Request

from gateway.auth import current_project
from gateway.settings import GatewaySettings
from services._proto.quarry.files.v1 import files_pb2, files_pb2_grpc

log = logging.getLogger(__name__)

#: The caller's project (401 without a valid key), as a route parameter type.
Project = Annotated[files_pb2.Project, Depends(current_project)]


def settings_of(request: Request) -> GatewaySettings:
    return request.app.state.settings  # type: ignore[no-any-return]


def files_of(request: Request) -> files_pb2_grpc.FilesStub:
    return request.app.state.backends.files  # type: ignore[no-any-return]


def catalog_timeout(request: Request) -> float:
    """The deadline of one catalog call."""
    return settings_of(request).catalog_timeout_seconds


async def resolve_index(request: Request, project: files_pb2.Project, index_id: str, *,
                        for_query: bool = False) -> files_pb2.Index:
    """The index if it belongs to the caller's project (NOT_FOUND -> 404 otherwise).

    ``for_query``: a retrieve, which may use the index as an earlier request read it (see
    ``IndexCache``); everything else reads it afresh, and that refreshes the retrieves' view.
    """
    return await request.app.state.usecases.index(project.id, index_id, for_query=for_query)  # type: ignore[no-any-return]


async def remove_index(request: Request, project: files_pb2.Project, index_id: str) -> None:
    """Delete an index: the catalog first (it stops being served, and an engine drop is recorded in
    the same transaction), then its chunks in both engines. When an engine does not finish in
    time the delete still succeeds: an ingest worker completes the recorded drop later."""
    await files_of(request).DeleteIndex(
        files_pb2.DeleteIndexRequest(project_id=project.id, index_id=index_id), timeout=catalog_timeout(request)
    )
    request.app.state.indexes.forget(project.id, index_id)
    await drop_from_engines(request, index_id)


async def drop_from_engines(request: Request, index_id: str) -> None:
    """Drop a deleted index's chunks from both engines and complete its engine drop; when an engine
    does not finish in time the ingest worker completes the recorded drop later."""
    try:
        await request.app.state.backends.drop_index(index_id, settings_of(request).request_timeout_seconds)
    except (grpc.aio.AioRpcError, TimeoutError) as exc:
        log.warning("index %s deleted; its chunks are left to the ingest worker's engine drop (%s)", index_id,
                    exc.code().name if isinstance(exc, grpc.aio.AioRpcError) else "timeout")
        return
    await files_of(request).CompleteEngineDrop(files_pb2.CompleteEngineDropRequest(index_id=index_id),
                                               timeout=catalog_timeout(request))
