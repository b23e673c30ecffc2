"""Files-service messages -> HTTP response models."""

from __future__ import annotations

import json
from typing import Any

from gateway import models
from services._proto.quarry.files.v1 import files_pb2


def _opt(value: str) -> str | None:
    return value or None


def _meta(raw: str) -> dict[str, Any] | None:
    return json.loads(raw) if raw else None


def project(p: files_pb2.Project) -> models.Project:
    return models.Project(
        id=p.id, name=p.name, organization_id=p.organization_id, is_default=p.is_default,
        created_at=_opt(p.created_at), updated_at=_opt(p.updated_at),
    )


def directory(d: files_pb2.Directory) -> models.Directory:
    return models.Directory(
        id=d.id, name=d.name, project_id=d.project_id, description=_opt(d.description),
        type=_opt(d.type), created_at=_opt(d.created_at), updated_at=_opt(d.updated_at),
    )


def directory_file(f: files_pb2.DirectoryFile) -> models.DirectoryFile:
    return models.DirectoryFile(
        id=f.id, directory_id=f.directory_id, display_name=f.display_name, project_id=f.project_id,
        unique_id=f.unique_id, file_id=_opt(f.file_id), external_file_id=_opt(f.external_file_id),
        metadata=_meta(f.metadata_json), created_at=_opt(f.created_at), updated_at=_opt(f.updated_at),
    )


#: A finished sync in which some files failed (their reasons are in ``sync_progress.failures``).
PARTIALLY_SUCCEEDED = "partially_succeeded"


def sync_status(i: files_pb2.Index) -> str | None:
    """The last sync's status; a sync that finished with failed files is ``partially_succeeded``."""
    if not i.HasField("last_job"):
        return None
    if i.last_job.status == "succeeded" and i.last_job_failed_items:
        return PARTIALLY_SUCCEEDED
    return i.last_job.status


def index(i: files_pb2.Index, *, expand_sync: bool = False) -> models.Index:
    job = i.last_job if i.HasField("last_job") else None
    return models.Index(
        id=i.id, name=i.name, project_id=i.project_id, source_directory_id=i.source_directory_id,
        output_directory_id=i.output_directory_id,
        # Quarry has no export or sync-config objects; the index id stands in for both.
        export_config_id=i.id, sync_config_id=i.id,
        created_at=_opt(i.created_at), updated_at=_opt(i.updated_at),
        last_synced_at=_opt(i.last_synced_at), description=_opt(i.description),
        metadata=_meta(i.metadata_json),
        sync_in_progress=i.sync_in_progress if expand_sync else None,
        sync_status=sync_status(i),
        sync_progress=(
            {"job_id": job.id, "total_items": job.total_items, "done_items": job.done_items,
             "failed_items": i.last_job_failed_items, "error": job.error or None,
             "failures": [{"directory_file_id": f.source_file_id, "file_name": f.file_name, "error": f.error}
                          for f in i.last_job_failures]}
            if job else None
        ),
    )
