"""The files servicer's domain -> protobuf conversion."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta, timezone

import pytest

from services._proto.quarry.files.v1 import files_pb2 as pb
from services.files import domain as d
from services.files.servicer import MESSAGES, page_image, rfc3339, to_pb

T0 = datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)


@pytest.mark.parametrize(("domain_type", "message_type"), list(MESSAGES.items()))
def test_each_message_has_the_dataclass_fields(domain_type: type, message_type: type) -> None:
    names = [f.name for f in dataclasses.fields(domain_type)]
    assert names == [f.name for f in message_type.DESCRIPTOR.fields]  # type: ignore[attr-defined]


def test_rfc3339_is_utc_with_microseconds() -> None:
    assert rfc3339(T0) == "2025-01-02T03:04:05.678901Z"
    assert rfc3339(T0.astimezone(timezone(timedelta(hours=2)))) == "2025-01-02T03:04:05.678901Z"
    assert rfc3339(None) == ""


def _job(**kw: object) -> d.Job:
    fields = dict(
        id="j", index_id="i", status="running", worker_id="w", lease_until=T0, attempts=2, total_items=3,
        done_items=1, error="", created_at=T0, started_at=None, finished_at=None,
    )
    return d.Job(**{**fields, **kw})  # type: ignore[arg-type]


def test_job_and_index_convert_field_by_field() -> None:
    job = to_pb(_job())
    assert (job.id, job.status, job.attempts, job.total_items, job.done_items) == ("j", "running", 2, 3, 1)
    assert (job.lease_until, job.created_at, job.started_at) == (rfc3339(T0), rfc3339(T0), "")
    index = d.Index(
        id="i", project_id="p", name="n", description="x", source_directory_id="s", output_directory_id="o",
        generation=4, sync_in_progress=True, created_at=T0, updated_at=T0, last_synced_at=None,
        metadata_json='{"a":1}', last_job=_job(),
    )
    msg = to_pb(index)
    assert (msg.generation, msg.sync_in_progress, msg.metadata_json, msg.last_synced_at) == (4, True, '{"a":1}', "")
    assert (msg.kind, msg.config_json, msg.last_job_failed_items) == ("index", "{}", 0)
    pipeline = to_pb(dataclasses.replace(index, kind="pipeline", config_json='{"b":2}', last_job_failed_items=3))
    assert (pipeline.kind, pipeline.config_json, pipeline.last_job_failed_items) == ("pipeline", '{"b":2}', 3)
    assert msg.last_job == job
    assert not to_pb(dataclasses.replace(index, last_job=None)).HasField("last_job")


def _file(**kw: object) -> d.DirectoryFile:
    fields = dict(
        id="f", directory_id="dir", project_id="p", display_name="a.pdf", unique_id="u", external_file_id="",
        file_id="sha", metadata_json="{}", version=2, size_bytes=3, content_type="application/pdf",
        created_at=T0, updated_at=T0,
    )
    return d.DirectoryFile(**{**fields, **kw})  # type: ignore[arg-type]


def test_file_status_nests_the_file_and_content_is_only_set_when_read() -> None:
    status = to_pb(d.FileStatus(status="ERROR", error="bad pdf", job_id="j", file=_file()))
    assert (status.status, status.error, status.job_id, status.file.id, status.file.version) == (
        "ERROR", "bad pdf", "j", "f", 2
    )
    assert status.file.content == b""
    assert to_pb(_file(content=b"%PDF")).content == b"%PDF"


def test_page_images_and_prepared_files_convert_both_ways() -> None:
    msg = pb.PageImage(file_id="f", page_index=3, content=b"\x89PNG", content_type="image/png", width=8, height=9,
                       size_bytes=999)
    image = page_image(msg)
    assert image == d.PageImage(file_id="f", page_index=3, content=b"\x89PNG", content_type="image/png", width=8,
                                height=9, size_bytes=4)
    assert to_pb(image) == pb.PageImage(file_id="f", page_index=3, content=b"\x89PNG", content_type="image/png",
                                        width=8, height=9, size_bytes=4)
    prepared = to_pb(d.PreparedFile(parsed_file_id="pf", version=4, index_config_json='{"page_screenshots":true}'))
    assert prepared == pb.PrepareParsedFileResponse(
        parsed_file_id="pf", version=4, index_config_json='{"page_screenshots":true}'
    )
