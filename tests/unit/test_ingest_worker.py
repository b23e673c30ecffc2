"""The ingest worker against fake files/dense/sparse servicers over real gRPC (port 0)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from services._proto.quarry.dense.v1 import dense_pb2_grpc
from services._proto.quarry.files.v1 import files_pb2, files_pb2_grpc
from services._proto.quarry.sparse.v1 import sparse_pb2_grpc
from services.common.channels import channel
from services.common.domain import chunk_id, file_card_id, files_index_id
from services.ingest.bootstrap import bootstrap
from services.ingest.chunking import piece_tokenizer
from services.ingest.screenshots import PdfPageRenderer
from services.ingest.settings import IngestSettings
from services.ingest.worker import IndexConfig, IngestWorker, JobOutcome, chunk_metadata
from tests.credentials import AUTH
from tests.fixtures.ingest.fakes import FakeBackends, parsed_file_id_for, start_fake_backends
from tests.fixtures.ingest.pdf_builder import build_pdf

INDEX = "idx-1"
FILES_INDEX = files_index_id(INDEX)
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
        self._workers: list[IngestWorker] = []

    def settings(self, **overrides: Any) -> IngestSettings:
        values: dict[str, Any] = {
            **self.fakes.addresses, "worker_id": "worker-a", "lease_seconds": 30.0, "poll_interval": 0.02,
            "batch_size": 4, "retry_initial_backoff": 0.01, "retry_max_backoff": 0.02, "rpc_timeout": 5.0,
        }
        values.update(overrides)
        return IngestSettings(**values)

    def worker(self, **overrides: Any) -> IngestWorker:
        settings = self.settings(**overrides)
        chans = [channel(address, AUTH) for address in (settings.files_addr, settings.dense_addr, settings.sparse_addr)]
        self._channels.extend(chans)
        worker = IngestWorker(
            settings,
            files_pb2_grpc.FilesStub(chans[0]),
            dense_pb2_grpc.DenseSearchStub(chans[1]),
            sparse_pb2_grpc.SparseSearchStub(chans[2]),
            tokenizer=piece_tokenizer(),
        )
        self._workers.append(worker)
        return worker

    async def close(self) -> None:
        for worker in self._workers:
            worker.close()
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
        engine.chunks[(FILES_INDEX, file_card_id(stale_id))] = _stale_chunk(stale_id, 0)
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
        assert c.source_id == "guide.txt"  # the source file's unique_id
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

    # The delete removed the stale file's chunks and its card from both engines.
    assert h.dense.ids(INDEX, stale_id) == set() and h.sparse.ids(INDEX, stale_id) == set()
    assert h.dense.ids(FILES_INDEX, stale_id) == set() and h.sparse.ids(FILES_INDEX, stale_id) == set()
    # One card per indexed file, in both engines.
    assert h.dense.ids(FILES_INDEX) == {file_card_id(txt_id), file_card_id(pdf_id)} == h.sparse.ids(FILES_INDEX)
    assert by_source["src-gone"].chunk_count == 0 and by_source["src-gone"].error == ""
    # Batches respect batch_size, and every call carried a deadline.
    assert all(len(c.request.chunks) <= 4 for c in h.dense.rec.called("Upsert"))
    for rec in (h.files.rec, h.dense.rec, h.sparse.rec):
        assert rec.calls and all(c.time_remaining is not None for c in rec.calls)


async def test_a_file_is_cleared_from_both_engines_before_it_is_written(h: Harness) -> None:
    add_sources(h)
    h.files.add_job(INDEX, [("src-txt", "upsert")])
    await h.worker().run_once()
    txt_id = parsed_file_id_for(INDEX, "src-txt")
    for engine in (h.dense, h.sparse):
        calls = [(c.method, c.request.index_id) for c in engine.rec.calls]
        # Its chunks and its card are deleted first, then the chunks written, the card last.
        assert sorted(calls[:2]) == sorted([("DeleteFile", INDEX), ("DeleteFile", FILES_INDEX)])
        assert all(c.request.file_id == txt_id for c in engine.rec.calls[:2])
        assert set(calls[2:-1]) == {("Upsert", INDEX)} and calls[-1] == ("Upsert", FILES_INDEX)


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
    # Both files were one window: fetched together, held at their first Upsert, never committed.
    assert {c.request.source_file_id for c in h.files.rec.called("GetSourceFile")} == {"src-txt", "src-pdf"}
    assert len(h.dense.rec.called("Upsert")) == 1
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

    await h.worker(window_files=1).run(stop)

    assert [c.source_file_id for c in h.files.completed] == ["src-pdf"]
    assert h.files.jobs[job_id].finish is None  # left to the lease for another worker
    assert len(h.files.rec.called("ClaimJob")) == 1


def add_small_sources(h: Harness, n: int) -> list[str]:
    ids = [f"src-{i}" for i in range(n)]
    for i, source in enumerate(ids):
        h.files.add_source(source, f"note-{i}.txt", f"Note {i} about shard {i * 7}.".encode())
    return ids


async def test_small_files_share_upsert_calls_within_a_window(h: Harness) -> None:
    sources = add_small_sources(h, 10)
    job_id = h.files.add_job(INDEX, [(s, "upsert") for s in sources])

    assert await h.worker(window_files=16, batch_size=4).run_once() is JobOutcome.SUCCEEDED

    assert [c.source_file_id for c in h.files.completed] == sources  # committed in job order
    assert all(c.chunk_count == 1 and c.error == "" for c in h.files.completed)
    for engine in (h.dense, h.sparse):
        upserts = [c.request for c in engine.rec.called("Upsert")]
        # 10 one-chunk files: 3 calls of <= 4 chunks, then one call with the 10 cards.
        assert [(r.index_id, len(r.chunks)) for r in upserts] == [(INDEX, 4), (INDEX, 4), (INDEX, 2), (FILES_INDEX, 10)]
        assert len(engine.ids(INDEX)) == 10 and len(engine.ids(FILES_INDEX)) == 10
    assert h.files.jobs[job_id].finish.status == "succeeded"  # type: ignore[union-attr]


async def test_windows_are_committed_in_turn_and_stop_drops_the_window_prepared_ahead(h: Harness) -> None:
    sources = add_small_sources(h, 5)
    job_id = h.files.add_job(INDEX, [(s, "upsert") for s in sources])
    stop = asyncio.Event()
    h.files.on_complete = lambda _: stop.set()  # SIGTERM during the first window's commits

    await h.worker(window_files=2).run(stop)

    # The first window is finished; the next one (perhaps fetched already) is neither written nor committed.
    assert [c.source_file_id for c in h.files.completed] == sources[:2]
    assert {c.request.index_id for c in h.dense.rec.called("Upsert")} == {INDEX, FILES_INDEX}
    assert h.dense.ids(INDEX) == {chunk_id(parsed_file_id_for(INDEX, s), 1, 0) for s in sources[:2]}
    assert h.files.jobs[job_id].finish is None

    # Another worker resumes with what was not committed.
    h.files.on_complete = None
    h.files.jobs[job_id].job.status = "pending"
    assert await h.worker(worker_id="worker-b", window_files=2).run_once() is JobOutcome.SUCCEEDED
    assert [c.source_file_id for c in h.files.completed] == sources
    assert len(h.dense.ids(INDEX)) == 5 == len(h.sparse.ids(FILES_INDEX))


async def test_a_failed_window_fails_the_job_without_committing_the_next(h: Harness) -> None:
    sources = add_small_sources(h, 4)
    job_id = h.files.add_job(INDEX, [(s, "upsert") for s in sources])
    h.sparse.rec.failures["Upsert"] = [grpc.StatusCode.INVALID_ARGUMENT]

    assert await h.worker(window_files=2).run_once() is JobOutcome.FAILED

    assert h.files.completed == []
    assert h.files.jobs[job_id].finish.error.startswith("sparse Upsert: INVALID_ARGUMENT")  # type: ignore[union-attr]


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


async def test_the_file_card_carries_name_metadata_and_source_id(h: Harness) -> None:
    add_sources(h)
    h.files.add_source("src-doc", "notes_2024-q3.md", b"Body text.", metadata={"team": "search"},
                       unique_id="doc-42")
    h.files.add_job(INDEX, [("src-doc", "upsert")])
    assert await h.worker().run_once() is JobOutcome.SUCCEEDED

    doc_id = parsed_file_id_for(INDEX, "src-doc")
    card = h.dense.chunks[(FILES_INDEX, file_card_id(doc_id))]
    assert card == h.sparse.chunks[(FILES_INDEX, file_card_id(doc_id))]
    assert card.content == "notes_2024-q3.md\nnotes 2024 q3 md\nteam: search"
    assert (card.index_id, card.file_id, card.file_name, card.source_id) == (
        FILES_INDEX, doc_id, "notes_2024-q3.md", "doc-42"
    )
    assert json.loads(card.metadata_json) == {"team": "search"}
    assert (card.chunk_index, card.start_char, card.end_char) == (0, 0, 0)
    assert card.token_count == len(piece_tokenizer().encode(card.content, add_special_tokens=False).ids)
    [content] = [h.dense.chunks[(INDEX, cid)] for cid in h.dense.ids(INDEX, doc_id)]
    assert content.source_id == "doc-42"


async def test_a_new_version_replaces_the_card(h: Harness) -> None:
    h.files.add_source("src-doc", "plan.md", b"v1", metadata={"status": "draft"})
    h.files.add_job(INDEX, [("src-doc", "upsert")])
    assert await h.worker().run_once() is JobOutcome.SUCCEEDED
    h.files.add_source("src-doc", "plan.md", b"v2", metadata={"status": "final"}, version=2)
    h.files.add_job(INDEX, [("src-doc", "upsert")])
    assert await h.worker().run_once() is JobOutcome.SUCCEEDED

    doc_id = parsed_file_id_for(INDEX, "src-doc")
    for engine in (h.dense, h.sparse):
        assert engine.ids(FILES_INDEX) == {file_card_id(doc_id)}
        assert engine.chunks[(FILES_INDEX, file_card_id(doc_id))].content.endswith("status: final")


def screenshots_on(h: Harness) -> None:
    h.files.index_configs[INDEX] = json.dumps({"page_screenshots": True, "pipeline": {"name": "p"}})


async def test_screenshots_are_sent_in_batches_before_the_item_is_committed(h: Harness) -> None:
    screenshots_on(h)
    pages = [[f"Screenshot page {n}."] for n in range(1, 6)]
    h.files.add_source("src-pdf", "deck.pdf", build_pdf(pages))
    h.files.add_job(INDEX, [("src-pdf", "upsert")])
    # Room for about two rendered pages per call (a page of this PDF is a few KiB of PNG).
    one_page = len(_png_of_first_page(build_pdf(pages[:1])))
    worker = h.worker(screenshot_batch_bytes=int(one_page * 2.5))

    assert await worker.run_once() is JobOutcome.SUCCEEDED

    pdf_id = parsed_file_id_for(INDEX, "src-pdf")
    methods = [c.method for c in h.files.rec.calls]
    puts = h.files.rec.called("PutPageImages")
    assert len(puts) >= 2
    # All of them under the lease, before the item's commit; only the first replaces.
    assert max(i for i, m in enumerate(methods) if m == "PutPageImages") < methods.index("CompleteJobItem")
    assert [c.request.replace for c in puts] == [True] + [False] * (len(puts) - 1)
    for call in puts:
        assert call.request.parsed_file_id == pdf_id and call.request.worker_id == "worker-a"
        assert call.time_remaining is not None
        assert sum(len(i.content) for i in call.request.images) <= one_page * 2.5 or len(call.request.images) == 1
    stored = h.files.page_images[pdf_id]
    assert sorted(stored) == [0, 1, 2, 3, 4]
    for index, image in stored.items():
        assert image.file_id == pdf_id and image.page_index == index
        assert image.content.startswith(b"\x89PNG\r\n\x1a\n") and image.content_type == "image/png"
        assert (image.width, image.height) == (612, 792) and image.size_bytes == len(image.content)
    assert len({i.content for i in stored.values()}) == 5


async def test_screenshot_scale_and_page_limit_come_from_settings(h: Harness) -> None:
    screenshots_on(h)
    h.files.add_source("src-pdf", "deck.pdf", build_pdf([["one"], ["two"], ["three"]]))
    h.files.add_job(INDEX, [("src-pdf", "upsert")])
    assert await h.worker(screenshot_scale=0.5, screenshot_max_pages=2).run_once() is JobOutcome.SUCCEEDED

    stored = h.files.page_images[parsed_file_id_for(INDEX, "src-pdf")]
    assert sorted(stored) == [0, 1]
    assert {(i.width, i.height) for i in stored.values()} == {(306, 396)}
    # The text of every page is still indexed.
    assert h.files.completed[0].text == "one\n\ntwo\n\nthree"


async def test_with_screenshots_off_a_pdf_only_has_its_old_images_cleared(h: Harness) -> None:
    add_sources(h)
    pdf_id = parsed_file_id_for(INDEX, "src-pdf")
    h.files.page_images[pdf_id] = {0: files_pb2.PageImage(file_id=pdf_id, page_index=0, content=b"old")}
    h.files.add_job(INDEX, [("src-pdf", "upsert"), ("src-txt", "upsert")])

    assert await h.worker().run_once() is JobOutcome.SUCCEEDED

    [put] = h.files.rec.called("PutPageImages")
    assert put.request.parsed_file_id == pdf_id and put.request.replace and not put.request.images
    assert h.files.page_images[pdf_id] == {}


async def test_files_that_are_not_pdfs_get_no_screenshots(h: Harness) -> None:
    screenshots_on(h)
    add_sources(h)
    h.files.add_job(INDEX, [("src-txt", "upsert")])
    assert await h.worker().run_once() is JobOutcome.SUCCEEDED
    assert h.files.rec.called("PutPageImages") == []

    # A later version may replace what was a PDF: whatever images it had are dropped.
    h.files.add_source("src-txt", "guide.txt", b"now text", version=2)
    h.files.add_job(INDEX, [("src-txt", "upsert")])
    assert await h.worker().run_once() is JobOutcome.SUCCEEDED
    [put] = h.files.rec.called("PutPageImages")
    assert put.request.replace and not put.request.images


async def test_a_files_service_without_page_images_still_indexes_pdfs(h: Harness) -> None:
    add_sources(h)
    h.files.rec.failures["PutPageImages"] = [grpc.StatusCode.UNIMPLEMENTED]
    job_id = h.files.add_job(INDEX, [("src-pdf", "upsert")])
    assert await h.worker().run_once() is JobOutcome.SUCCEEDED
    assert h.files.jobs[job_id].items[0].status == "done"


async def test_a_refused_page_image_call_means_the_lease_is_lost(h: Harness) -> None:
    screenshots_on(h)
    add_sources(h)
    h.files.rec.failures["PutPageImages"] = [grpc.StatusCode.FAILED_PRECONDITION]
    job_id = h.files.add_job(INDEX, [("src-pdf", "upsert")])
    assert await h.worker().run_once() is JobOutcome.LEASE_LOST
    assert h.files.completed == [] and h.files.jobs[job_id].finish is None


async def test_an_index_chunks_with_its_own_chunking_and_says_so_on_commit(h: Harness) -> None:
    """A pipeline's transform_config (the index config's ``chunking``) overrides the settings for its
    files only; the commit carries the config the chunks were made with."""
    h.files.add_source("src-txt", "guide.txt", LONG_TEXT)
    other = "idx-2"
    h.files.index_configs[INDEX] = json.dumps({"chunking": {"chunk_size": 40, "chunk_overlap": 4}})
    h.files.add_job(INDEX, [("src-txt", "upsert")])
    h.files.add_job(other, [("src-txt", "upsert")])
    worker = h.worker()
    assert await worker.run_once() is JobOutcome.SUCCEEDED
    assert await worker.run_once() is JobOutcome.SUCCEEDED

    def sizes(index_id: str) -> list[int]:
        ids = h.dense.ids(index_id, parsed_file_id_for(index_id, "src-txt"))
        return [h.dense.chunks[(index_id, cid)].token_count for cid in ids]

    small, default = sizes(INDEX), sizes(other)
    assert max(small) <= 40 < max(default) <= 200
    assert len(small) > 3 * len(default)
    committed = {c.job_id: c for c in h.files.completed}
    assert [c.index_config_json for c in committed.values()] == [h.files.index_configs[INDEX], ""]


def test_index_config_reads_page_screenshots_only_when_true() -> None:
    assert IndexConfig.from_json('{"page_screenshots": true}').page_screenshots
    for text in ("", "null", "[]", "not json", '{"page_screenshots": "true"}', '{"page_screenshots": false}',
                 '{"pipeline": {}}'):
        assert not IndexConfig.from_json(text).page_screenshots, text


def test_chunk_metadata_keeps_scalars_and_lists() -> None:
    assert chunk_metadata("") == {}
    assert chunk_metadata("[1, 2]") == {}
    assert chunk_metadata("not json") == {}
    raw = '{"a": 1, "b": "x", "c": [1, "y"], "d": null, "e": {"f": [1]}, "g": [{"h": 1}]}'
    assert chunk_metadata(raw) == {
        "a": 1, "b": "x", "c": [1, "y"], "d": None, "e": '{"f":[1]}', "g": '[{"h":1}]',
    }


def _png_of_first_page(pdf: bytes) -> bytes:
    renderer = PdfPageRenderer(pdf, 1.0)
    try:
        return renderer.render(0).content
    finally:
        renderer.close()


def _stale_chunk(file_id: str, i: int) -> Any:
    from services._proto.quarry.common.v1 import common_pb2

    return common_pb2.Chunk(id=chunk_id(file_id, 1, i), index_id=INDEX, file_id=file_id, content=f"old {i}")


async def _wait_for(probe: Any, expected: bool) -> None:
    """Poll a readiness probe until it gives ``expected`` (the health watch runs every 2 s)."""
    async with asyncio.timeout(15):
        while await probe() is not expected:  # noqa: ASYNC110 - polling a remote status
            await asyncio.sleep(0.05)


async def test_an_idle_worker_drops_the_chunks_of_deleted_indexes_and_retries_a_failed_drop(h: Harness) -> None:
    for engine in (h.dense, h.sparse):
        for index_id, chunk in (("gone", "c1"), ("gone.files", "card"), ("kept", "c2")):
            engine.chunks[(index_id, chunk)] = _stale_chunk("f", 0)
    h.files.engine_drops = {"gone": 0}
    worker = h.worker(engine_drop_batch=5)

    h.dense.refuse_drops = True
    assert await worker.drop_engines() == 0
    assert h.files.engine_drops == {"gone": 1}  # kept, the attempt counted with its error
    assert h.files.drops_completed[-1].failed and "UNAVAILABLE" in h.files.drops_completed[-1].error

    h.dense.refuse_drops = False
    assert await worker.drop_engines() == 1
    assert h.files.engine_drops == {}
    for engine in (h.dense, h.sparse):
        assert {i for i, _ in engine.chunks} == {"kept"}
    assert [c.request.limit for c in h.files.rec.called("ListEngineDrops")] == [5, 5]


async def test_the_run_loop_drains_engine_drops_when_no_job_waits(h: Harness) -> None:
    h.dense.chunks[("gone", "c1")] = _stale_chunk("f", 0)
    h.files.engine_drops = {"gone": 0}
    stop = asyncio.Event()
    task = asyncio.create_task(h.worker().run(stop))
    for _ in range(200):
        if not h.files.engine_drops:
            break
        await asyncio.sleep(0.01)
    stop.set()
    await task
    assert h.files.engine_drops == {} and ("gone", "c1") not in h.dense.chunks


async def test_a_rebuild_rewrites_only_its_engines_from_the_stored_text(h: Harness) -> None:
    """A sparse rebuild: the damaged copy is dropped, the stored texts chunked again under the
    same ids the dense copy has, dense untouched, and no text or page image written back."""
    text = "Obsidian is volcanic glass. " * 40
    h.files.add_source("src-a", "glass.txt", text.encode())
    first = h.files.add_job(INDEX, [("src-a", "upsert")])
    assert await h.worker().run_once() is JobOutcome.SUCCEEDED
    dense_ids = h.dense.ids(INDEX)
    h.sparse.chunks.clear()
    h.sparse.chunks[(INDEX, "left-over-of-the-damaged-copy")] = _stale_chunk("x", 0)
    h.files.parsed_texts["src-a"] = text
    upserts_before = len(h.dense.rec.called("Upsert"))

    rebuild = h.files.add_job(INDEX, [("src-a", "rebuild")], kind="rebuild", engines="sparse")
    assert await h.worker().run_once() is JobOutcome.SUCCEEDED
    assert h.sparse.ids(INDEX) == dense_ids  # same chunk ids, nothing left of the old copy
    assert h.sparse.ids(FILES_INDEX) == h.dense.ids(FILES_INDEX)  # the file card too
    assert len(h.dense.rec.called("Upsert")) == upserts_before and not h.dense.rec.called("DropIndex")
    assert {c.request.index_id for c in h.sparse.rec.called("DropIndex")} == {INDEX, FILES_INDEX}
    (committed,) = [c for c in h.files.completed if c.job_id == rebuild]
    assert committed.text == "" and committed.chunk_count == len(dense_ids)
    assert h.files.jobs[first].finish is not None


async def test_a_resumed_rebuild_does_not_drop_what_earlier_attempts_wrote(h: Harness) -> None:
    for name in ("a", "b"):
        h.files.add_source(f"src-{name}", f"{name}.txt", f"text of {name} about granite".encode())
        h.files.parsed_texts[f"src-{name}"] = f"text of {name} about granite"
    kept = (INDEX, chunk_id(parsed_file_id_for(INDEX, "src-a"), 1, 0))
    h.sparse.chunks[kept] = _stale_chunk(parsed_file_id_for(INDEX, "src-a"), 0)
    h.files.add_job(INDEX, [("src-a", "rebuild"), ("src-b", "rebuild")], kind="rebuild", engines="sparse",
                    done={"src-a"})
    assert await h.worker().run_once() is JobOutcome.SUCCEEDED
    assert not h.sparse.rec.called("DropIndex")
    assert kept in h.sparse.chunks and h.sparse.ids(INDEX, parsed_file_id_for(INDEX, "src-b"))
