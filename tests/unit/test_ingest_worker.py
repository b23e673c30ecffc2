"""The ingest worker against fake files/dense/sparse servicers over real gRPC (port 0)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from services._proto.quarry.dense.v1 import dense_pb2_grpc
from services._proto.quarry.files.v1 import files_pb2_grpc
from services._proto.quarry.sparse.v1 import sparse_pb2_grpc
from services.common.channels import channel
from services.common.domain import chunk_id
from services.ingest.bootstrap import bootstrap
from services.ingest.chunking import piece_tokenizer
from services.ingest.settings import IngestSettings
from services.ingest.worker import IngestWorker, JobOutcome, chunk_metadata
from tests.fixtures.ingest.fakes import FakeBackends, parsed_file_id_for, start_fake_backends
from tests.fixtures.ingest.pdf_builder import build_pdf

INDEX = "idx-1"
LONG_TEXT = "\n\n".join(
    f"Paragraph {p}. "
    + " ".join(f"Quarry sentence {p}-{s} about hybrid retrieval and reranking." for s in range(8))
    for p in range(12)
).encode()


class Harness:
    """Fakes on free ports plus a worker wired to them through the real channel factory."""

    def __init__(self, fakes: FakeBackends) -> None:
        self.fakes = fakes
        self.files, self.dense, self.sparse = fakes.files, fakes.dense, fakes.sparse
        self._channels: list[grpc.aio.Channel] = []

    def settings(self, **overrides: Any) -> IngestSettings:
        values: dict[str, Any] = {
            **self.fakes.addresses, "worker_id": "worker-a", "lease_seconds": 30.0, "poll_interval": 0.02,
            "batch_size": 4, "retry_initial_backoff": 0.01, "retry_max_backoff": 0.02, "rpc_timeout": 5.0,
        }
        values.update(overrides)
        return IngestSettings(**values)

    def worker(self, **overrides: Any) -> IngestWorker:
        settings = self.settings(**overrides)
        chans = [channel(settings.files_addr), channel(settings.dense_addr), channel(settings.sparse_addr)]
        self._channels.extend(chans)
        return IngestWorker(
            settings,
            files_pb2_grpc.FilesStub(chans[0]),
            dense_pb2_grpc.DenseSearchStub(chans[1]),
            sparse_pb2_grpc.SparseSearchStub(chans[2]),
            tokenizer=piece_tokenizer(),
        )

    async def close(self) -> None:
        for chan in self._channels:
            await chan.close()
        await self.fakes.stop()


@pytest.fixture
async def h() -> AsyncIterator[Harness]:
    harness = Harness(await start_fake_backends())
    yield harness
    await harness.close()


def add_sources(h: Harness) -> None:
    h.files.add_source("src-txt", "guide.txt", LONG_TEXT, metadata={"team": "search", "year": 2024,
                                                                     "tags": ["a", "b"], "nested": {"k": 1}})
    h.files.add_source("src-pdf", "report.pdf", build_pdf([["Page one text."], ["Page two text."]]),
                       content_type="application/pdf")
    h.files.add_source("src-bin", "archive.zip", b"PK\x03\x04" + bytes(range(256)))


async def test_job_with_upserts_and_a_delete(h: Harness) -> None:
    add_sources(h)
    stale_id = parsed_file_id_for(INDEX, "src-gone")
    # Chunks of a file that the job deletes, already in both engines.
    for engine in (h.dense, h.sparse):
        for i in range(3):
            engine.chunks[(INDEX, chunk_id(stale_id, 1, i))] = _stale_chunk(stale_id, i)
    job_id = h.files.add_job(
        INDEX, [("src-txt", "upsert"), ("src-pdf", "upsert"), ("src-gone", "delete")],
        parsed={"src-gone": stale_id},
    )

    assert await h.worker().run_once() is JobOutcome.SUCCEEDED

    job = h.files.jobs[job_id]
    assert job.finish is not None and job.finish.status == "succeeded"
    assert all(item.status == "done" for item in job.items)
    by_source = {c.source_file_id: c for c in h.files.completed}
    assert set(by_source) == {"src-txt", "src-pdf", "src-gone"}

    txt = by_source["src-txt"]
    txt_id = parsed_file_id_for(INDEX, "src-txt")
    assert txt.text == LONG_TEXT.decode() and txt.error == "" and not txt.pages
    assert txt.chunk_count > 3
    stored = sorted((h.dense.chunks[(INDEX, cid)] for cid in h.dense.ids(INDEX, txt_id)),
                    key=lambda c: c.chunk_index)
    assert [c.chunk_index for c in stored] == list(range(txt.chunk_count))
    for c in stored:
        assert c.id == chunk_id(txt_id, 1, c.chunk_index)
        assert txt.text[c.start_char : c.end_char] == c.content
        assert c.file_id == txt_id and c.file_name == "guide.txt" and c.index_id == INDEX
        assert json.loads(c.metadata_json) == {"team": "search", "year": 2024, "tags": ["a", "b"],
                                               "nested": '{"k":1}'}
        assert 0 < c.token_count <= 200
    # Both engines hold exactly the same chunks.
    assert h.dense.chunks == h.sparse.chunks

    pdf = by_source["src-pdf"]
    assert pdf.text == "Page one text.\n\nPage two text."
    assert [(p.number, p.start_char, p.end_char) for p in pdf.pages] == [(1, 0, 14), (2, 16, 30)]
    pdf_id = parsed_file_id_for(INDEX, "src-pdf")
    [pdf_chunk] = [h.dense.chunks[(INDEX, cid)] for cid in h.dense.ids(INDEX, pdf_id)]
    assert (pdf_chunk.page_start, pdf_chunk.page_end) == (1, 2)

    # The delete removed the stale file's chunks from both engines.
    assert h.dense.ids(INDEX, stale_id) == set() and h.sparse.ids(INDEX, stale_id) == set()
    assert by_source["src-gone"].chunk_count == 0 and by_source["src-gone"].error == ""
    # Batches respect batch_size, and every call carried a deadline.
    assert all(len(c.request.chunks) <= 4 for c in h.dense.rec.called("Upsert"))
    for rec in (h.files.rec, h.dense.rec, h.sparse.rec):
        assert rec.calls and all(c.time_remaining is not None for c in rec.calls)


async def test_a_file_is_cleared_from_both_engines_before_it_is_written(h: Harness) -> None:
    add_sources(h)
    h.files.add_job(INDEX, [("src-txt", "upsert")])
    await h.worker().run_once()
    for engine in (h.dense, h.sparse):
        methods = [c.method for c in engine.rec.calls]
        assert methods[0] == "DeleteFile" and set(methods[1:]) == {"Upsert"}
        assert engine.rec.calls[0].request.file_id == parsed_file_id_for(INDEX, "src-txt")


async def test_a_parse_error_completes_the_item_with_an_error_and_the_job_goes_on(h: Harness) -> None:
    add_sources(h)
    job_id = h.files.add_job(INDEX, [("src-bin", "upsert"), ("src-missing", "upsert"), ("src-pdf", "upsert")])

    assert await h.worker().run_once() is JobOutcome.SUCCEEDED

    by_source = {c.source_file_id: c for c in h.files.completed}
    assert "unsupported" in by_source["src-bin"].error
    assert by_source["src-bin"].chunk_count == 0 and by_source["src-bin"].text == ""
    assert by_source["src-missing"].error == "source file not found"
    assert by_source["src-pdf"].error == "" and by_source["src-pdf"].chunk_count == 1
    assert h.files.jobs[job_id].finish.status == "succeeded"  # type: ignore[union-attr]
    # Nothing was written for the unparseable file.
    assert h.dense.ids(INDEX, parsed_file_id_for(INDEX, "src-bin")) == set()


async def test_lease_loss_stops_the_job(h: Harness) -> None:
    add_sources(h)
    job_id = h.files.add_job(INDEX, [("src-txt", "upsert"), ("src-pdf", "upsert")])
    h.dense.gate = asyncio.Event()  # hold the first Upsert until the lease is gone
    running = asyncio.create_task(h.worker(lease_seconds=0.15).run_once())
    await h.dense.upsert_entered.wait()
    h.files.revoke_lease = True  # the next heartbeat finds the lease expired

    outcome = await running

    assert outcome is JobOutcome.LEASE_LOST
    assert h.files.lease_revoked.is_set()
    assert h.files.jobs[job_id].finish is None
    assert h.files.completed == []
    assert h.files.rec.called("GetSourceFile")[-1].request.source_file_id == "src-txt"
    h.dense.gate.set()


async def test_a_refused_commit_means_the_lease_is_lost(h: Harness) -> None:
    add_sources(h)
    job_id = h.files.add_job(INDEX, [("src-pdf", "upsert"), ("src-txt", "upsert")])

    def taken_over(_: Any) -> None:
        h.files.jobs[job_id].job.worker_id = "worker-b"  # another worker claimed the job

    h.files.on_complete = taken_over
    assert await h.worker().run_once() is JobOutcome.LEASE_LOST
    # The second item's commit was refused; the worker stopped without finishing the job.
    assert [c.request.source_file_id for c in h.files.rec.called("CompleteJobItem")] == ["src-pdf", "src-txt"]
    assert [c.source_file_id for c in h.files.completed] == ["src-pdf"]
    assert h.files.rec.called("FinishJob") == []


async def test_unavailable_is_retried_with_backoff(h: Harness) -> None:
    add_sources(h)
    # More failures than the channel's own retry policy absorbs (3 attempts).
    h.sparse.rec.failures["Upsert"] = [grpc.StatusCode.UNAVAILABLE] * 4
    h.files.rec.failures["CompleteJobItem"] = [grpc.StatusCode.UNAVAILABLE] * 4
    job_id = h.files.add_job(INDEX, [("src-txt", "upsert")])

    assert await h.worker().run_once() is JobOutcome.SUCCEEDED

    assert h.sparse.rec.failures["Upsert"] == [] and h.files.rec.failures["CompleteJobItem"] == []
    assert len(h.sparse.rec.called("Upsert")) >= len(h.dense.rec.called("Upsert")) + 4
    assert h.sparse.ids(INDEX) == h.dense.ids(INDEX) != set()
    assert h.files.jobs[job_id].finish.status == "succeeded"  # type: ignore[union-attr]


async def test_persistent_unavailability_leaves_the_job_to_its_lease(h: Harness) -> None:
    add_sources(h)
    h.dense.rec.failures["Upsert"] = [grpc.StatusCode.UNAVAILABLE] * 100
    job_id = h.files.add_job(INDEX, [("src-pdf", "upsert")])

    assert await h.worker(retry_attempts=2).run_once() is JobOutcome.ABANDONED

    assert h.files.jobs[job_id].finish is None and h.files.completed == []


async def test_a_non_transient_engine_error_fails_the_job(h: Harness) -> None:
    add_sources(h)
    h.dense.rec.failures["Upsert"] = [grpc.StatusCode.INTERNAL]
    job_id = h.files.add_job(INDEX, [("src-pdf", "upsert")])

    assert await h.worker().run_once() is JobOutcome.FAILED

    finish = h.files.jobs[job_id].finish
    assert finish is not None and finish.status == "failed"
    assert finish.error == "dense Upsert: INTERNAL: injected INTERNAL"


async def test_chunk_ids_are_deterministic_across_runs_and_versions(h: Harness) -> None:
    add_sources(h)
    txt_id = parsed_file_id_for(INDEX, "src-txt")
    h.files.add_job(INDEX, [("src-txt", "upsert")])
    assert await h.worker().run_once() is JobOutcome.SUCCEEDED
    first = {cid: h.dense.chunks[(INDEX, cid)].content for cid in h.dense.ids(INDEX, txt_id)}

    # The same job again (as after a crash before FinishJob), by another worker.
    h.files.add_job(INDEX, [("src-txt", "upsert")])
    assert await h.worker(worker_id="worker-b").run_once() is JobOutcome.SUCCEEDED
    second = {cid: h.dense.chunks[(INDEX, cid)].content for cid in h.dense.ids(INDEX, txt_id)}
    assert second == first
    assert h.sparse.ids(INDEX, txt_id) == set(first)

    # A new version gets new ids and the old version's chunks are gone.
    h.files.add_source("src-txt", "guide.txt", b"Version two is short.", version=2)
    h.files.add_job(INDEX, [("src-txt", "upsert")])
    assert await h.worker().run_once() is JobOutcome.SUCCEEDED
    assert h.dense.ids(INDEX, txt_id) == {chunk_id(txt_id, 2, 0)} == h.sparse.ids(INDEX, txt_id)


async def test_items_already_done_are_not_redone(h: Harness) -> None:
    add_sources(h)
    h.files.add_job(INDEX, [("src-txt", "upsert"), ("src-pdf", "upsert")], done={"src-txt"})
    assert await h.worker().run_once() is JobOutcome.SUCCEEDED
    assert [c.source_file_id for c in h.files.completed] == ["src-pdf"]
    assert [c.request.source_file_id for c in h.files.rec.called("GetSourceFile")] == ["src-pdf"]


async def test_stop_finishes_the_current_item_and_leaves_the_job(h: Harness) -> None:
    add_sources(h)
    job_id = h.files.add_job(INDEX, [("src-pdf", "upsert"), ("src-txt", "upsert")])
    stop = asyncio.Event()
    h.files.on_complete = lambda _: stop.set()  # SIGTERM arrives while the first item is in flight

    await h.worker().run(stop)

    assert [c.source_file_id for c in h.files.completed] == ["src-pdf"]
    assert h.files.jobs[job_id].finish is None  # left to the lease for another worker
    assert len(h.files.rec.called("ClaimJob")) == 1


async def test_idle_worker_polls_until_stopped(h: Harness) -> None:
    stop = asyncio.Event()
    h.files.on_claim = lambda n: stop.set() if n == 3 else None
    await h.worker().run(stop)
    assert len(h.files.rec.called("ClaimJob")) == 3


async def test_worker_keeps_polling_when_files_is_down_then_takes_the_job(h: Harness) -> None:
    add_sources(h)
    h.files.rec.failures["ClaimJob"] = [grpc.StatusCode.UNAVAILABLE] * 6
    job_id = h.files.add_job(INDEX, [("src-pdf", "upsert")])
    stop = asyncio.Event()
    waiter = asyncio.create_task(h.files.job_finished.wait())
    runner = asyncio.create_task(h.worker(retry_attempts=2).run(stop))
    await waiter
    stop.set()
    await runner
    assert h.files.jobs[job_id].finish.status == "succeeded"  # type: ignore[union-attr]


async def test_ready_follows_the_files_health(h: Harness) -> None:
    app = bootstrap(h.settings())
    try:
        await _wait_for(lambda: app.ready(), True)
        h.files.healthy = False
        await _wait_for(lambda: app.ready(), False)
    finally:
        await app.close()


def test_chunk_metadata_keeps_scalars_and_lists() -> None:
    assert chunk_metadata("") == {}
    assert chunk_metadata("[1, 2]") == {}
    assert chunk_metadata("not json") == {}
    raw = '{"a": 1, "b": "x", "c": [1, "y"], "d": null, "e": {"f": [1]}, "g": [{"h": 1}]}'
    assert chunk_metadata(raw) == {
        "a": 1, "b": "x", "c": [1, "y"], "d": None, "e": '{"f":[1]}', "g": '[{"h":1}]',
    }


def _stale_chunk(file_id: str, i: int) -> Any:
    from services._proto.quarry.common.v1 import common_pb2

    return common_pb2.Chunk(id=chunk_id(file_id, 1, i), index_id=INDEX, file_id=file_id, content=f"old {i}")


async def _wait_for(probe: Any, expected: bool) -> None:
    """Poll a readiness probe until it gives ``expected`` (the health watch runs every 2 s)."""
    async with asyncio.timeout(15):
        while await probe() is not expected:  # noqa: ASYNC110 - polling a remote status
            await asyncio.sleep(0.05)
