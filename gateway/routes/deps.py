"""What every route module reaches through the request: settings, the files stub, deadlines,
and the caller's project."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from gateway.auth import current_project
from gateway.settings import GatewaySettings
from services._proto.quarry.files.v1 import files_pb2, files_pb2_grpc

#: The caller's project (401 without a valid key), as a route parameter type.
Project = Annotated[files_pb2.Project, Depends(current_project)]


def settings_of(request: Request) -> GatewaySettings:
    return request.app.state.settings  # type: ignore[no-any-return]


def files_of(request: Request) -> files_pb2_grpc.FilesStub:
    return request.app.state.backends.files  # type: ignore[no-any-return]


def catalog_timeout(request: Request) -> float:
    """The deadline of one catalog call."""
    return settings_of(request).catalog_timeout_seconds
