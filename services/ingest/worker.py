"""The ingest worker: claim a sync job from files, parse -> chunk -> write to dense and sparse.

Protocol (quarry.files.v1.Files, "Ingest worker protocol"): ClaimJob with a lease, renew it
every third of the lease while working, ListJobItems, handle each pending item and commit it
with CompleteJobItem, then FinishJob. A worker that dies leaves its lease to expire and
another worker resumes the job with the items not yet committed. Chunk ids are
``chunk_id(parsed_file_id, version, index)``, and a file's chunks are deleted before they are
written, so redoing an item after a crash rewrites the same ids and never duplicates.

Upserts are worked in *windows* of up to ``window_files`` files: the files of a window are
fetched, parsed and chunked concurrently, their chunks share Upsert calls of ``batch_size``
(one embedding batch and one index commit per call instead of several per file) and their
cards one more call, and then each item is committed. While a window is written the next one
is already being prepared. A job of many small files therefore costs a few calls per window
rather than per file; the window size bounds how many source files are held in memory.

Per upserted file the worker also writes its "file card" (name and metadata as text, see
``cards``) to the companion index ``files_index_id(index_id)`` of both engines and, for a PDF
in an index whose config asks for ``page_screenshots``, sends its pages as PNG with
PutPageImages, all before the item is committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar

import grpc
import pypdfium2 as pdfium
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential, wait_random
from tokenizers import Tokenizer

from services._proto.quarry.dense.v1 import dense_pb2, dense_pb2_grpc
from services._proto.quarry.files.v1 import files_pb2, files_pb2_grpc
from services._proto.quarry.sparse.v1 import sparse_pb2, sparse_pb2_grpc
from services.common.convert import chunk_to_pb
from services.common.domain import Chunk, MetaValue, chunk_id, files_index_id
from services.common.telemetry import INGEST_CHUNKS, INGEST_ITEMS
from services.ingest.cards import build_file_card
from services.ingest.chunking import ChunkingOptions, TextChunk, chunk_text
from services.ingest.parsing import Page, ParsedDocument, ParseError
from services.ingest.sandbox import ParseSandbox
from services.ingest.screenshots import PNG_CONTENT_TYPE, PageImage, PdfPageRenderer, batch_by_size
from services.ingest.settings import IngestSettings

log = logging.getLogger(__name__)

_R = TypeVar("_R")

#: Codes that say "try again later" rather than "this cannot work": the job is left to its
#: lease (another attempt, here or on another worker) instead of being marked failed.
_TRANSIENT = frozenset({
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
})


class JobOutcome(StrEnum):
    """How the worker left a job."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    LEASE_LOST = "lease_lost"
    #: Stopped on shutdown or on a transient outage; the lease expiry hands it on.
    ABANDONED = "abandoned"


class LeaseLost(Exception):
    """Files refused a call for the job (FAILED_PRECONDITION): the lease is gone."""


class CallFailed(Exception):
    """A gRPC call failed with a status that retrying here did not fix."""

    def __init__(self, name: str, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{name}: {code.name}: {details}")
        self.name = name
        self.code = code
        self.details = details

    @property
    def transient(self) -> bool:
        return self.code in _TRANSIENT


def _is_unavailable(exc: BaseException) -> bool:
    return isinstance(exc, grpc.aio.AioRpcError) and exc.code() == grpc.StatusCode.UNAVAILABLE


#: Every engine a chunk is written to; a rebuild job names some of them.
ENGINES = ("dense", "sparse")


def _engines(job: files_pb2.Job) -> tuple[str, ...]:
    """The engines a job writes: a rebuild's own list, or every engine."""
    return tuple(e for e in job.engines.split(",") if e) or ENGINES


def chunk_metadata(metadata_json: str) -> dict[str, MetaValue]:
    """A source file's metadata as chunk metadata: scalars and lists of scalars.

    Chunk metadata has no nested objects (the retrieval contract); a nested value is kept as
    its JSON text rather than dropped.
    """
    if not metadata_json.strip():
        return {}
    try:
        raw = json.loads(metadata_json)
    except json.JSONDecodeError:
        log.warning("ignoring file metadata that is not JSON")
        return {}
    if not isinstance(raw, dict):
        return {}
    out: dict[str, MetaValue] = {}
    for key, value in raw.items():
        if value is None or isinstance(value, str | int | float | bool):
            out[str(key)] = value
        elif isinstance(value, list) and all(isinstance(v, str | int | float | bool) for v in value):
            out[str(key)] = list(value)
        else:
            out[str(key)] = json.dumps(value, separators=(",", ":"), sort_keys=True)
    return out


@dataclass(frozen=True, slots=True)
class IndexConfig:
    """The parts of an index's ``config_json`` that the worker acts on.

    ``chunking`` (``{"chunk_size"?, "chunk_overlap"?}``, tokens; a pipeline's ``transform_config``
    as the gateway checked it) overrides the worker's chunking settings for the index's files.
    """

    page_screenshots: bool = False
    chunk_size: int | None = None
    chunk_overlap: int | None = None

    def chunking(self, default: ChunkingOptions) -> ChunkingOptions:
        """The options to chunk this index's files with (see ``ChunkingOptions.resolve``)."""
        return default.resolve(self.chunk_size, self.chunk_overlap)

    @classmethod
    def from_json(cls, config_json: str) -> IndexConfig:
        """Unknown keys are ignored; a config that is not a JSON object means the defaults."""
        if not config_json.strip():
            return cls()
        try:
            raw = json.loads(config_json)
        except json.JSONDecodeError:
            log.warning("ignoring an index config that is not JSON")
            return cls()
        if not isinstance(raw, dict):
            log.warning("ignoring an index config that is not a JSON object")
            return cls()
        chunking = raw.get("chunking")
        sizes = chunking if isinstance(chunking, dict) else {}
        return cls(page_screenshots=raw.get("page_screenshots") is True,
                   chunk_size=_tokens(sizes.get("chunk_size")), chunk_overlap=_tokens(sizes.get("chunk_overlap")))


def _tokens(value: object) -> int | None:
    """A token count from a config, or None (absent, or not an integer: the default applies)."""
    if isinstance(value, bool) or not isinstance(value, int):
        if value is not None:
            log.warning("ignoring an index chunking value that is not an integer: %r", value)
        return None
    return value


def build_chunks(
    pieces: Sequence[TextChunk],
    *,
    index_id: str,
    parsed_file_id: str,
    version: int,
    file_name: str,
    metadata: Mapping[str, MetaValue],
    source_id: str = "",
) -> list[Chunk]:
    """Domain chunks with deterministic ids for one version of one parsed file.

    ``source_id`` is the source file's ``unique_id`` (a pipeline document's id, which LlamaIndex
    reports as the node's ``ref_doc_id``).
    """
    return [
        Chunk(
            id=chunk_id(parsed_file_id, version, piece.chunk_index),
            index_id=index_id,
            file_id=parsed_file_id,
            content=piece.content,
            file_name=file_name,
            metadata=metadata,
            chunk_index=piece.chunk_index,
            start_char=piece.start_char,
            end_char=piece.end_char,
            token_count=piece.token_count,
            page_start=piece.page_start,
            page_end=piece.page_end,
            source_id=source_id,
        )
        for piece in pieces
    ]


def _batched(items: Sequence[_R], size: int) -> Iterator[Sequence[_R]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@dataclass(frozen=True, slots=True)
class _PreparedFile:
    """One upsert item, parsed and chunked, ready to be written."""

    item: files_pb2.JobItem
    content: bytes
    document: ParsedDocument
    prepared: files_pb2.PrepareParsedFileResponse
    config: IndexConfig
    chunks: list[Chunk]
    card: Chunk


class IngestWorker:
    """Claims jobs and works them one at a time; run several processes to scale out."""

    def __init__(
        self,
        settings: IngestSettings,
        files: files_pb2_grpc.FilesStub,
        dense: dense_pb2_grpc.DenseSearchStub,
        sparse: sparse_pb2_grpc.SparseSearchStub,
        tokenizer: Tokenizer | None = None,
        sandbox: ParseSandbox | None = None,
    ) -> None:
        self._s = settings
        self._files = files
        self._dense = dense
        self._sparse = sparse
        self._tokenizer = tokenizer
        self._chunking = ChunkingOptions(settings.chunk_size, settings.chunk_overlap)
        self._sandbox = sandbox

    @property
    def sandbox(self) -> ParseSandbox:
        """The parsing processes (started on first use, under the settings' limits)."""
        if self._sandbox is None:
            self._sandbox = ParseSandbox(self._s.parse_limits(), self._s.parse_workers)
        return self._sandbox

    def close(self) -> None:
        """Stop the parsing processes."""
        if self._sandbox is not None:
            self._sandbox.close()
            self._sandbox = None

    @property
    def worker_id(self) -> str:
        return self._s.worker_id

    async def run(self, stop: asyncio.Event) -> None:
        """Claim and work jobs until ``stop`` is set; poll every ``poll_interval`` when idle.

        When ``stop`` is set mid-job, the window in progress is finished and the job is left to
        its lease. Cancel the task to abandon the window as well.
        """
        log.info("ingest worker %s started", self.worker_id)
        while not stop.is_set():
            try:
                outcome = await self.run_once(stop)
            except (CallFailed, LeaseLost) as exc:
                log.warning("claiming a job failed: %s", exc)
                outcome = None
            if outcome is None:
                await self.drop_engines()
            if outcome is None or outcome is JobOutcome.ABANDONED:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self._s.poll_interval)
        log.info("ingest worker %s stopped", self.worker_id)

    async def drop_engines(self) -> int:
        """Drop, from both engines, the chunks of indexes deleted a while ago that no gateway could
        finish dropping (``ListEngineDrops``); returns how many were completed."""
        try:
            listed = await self._call("ListEngineDrops", self._files.ListEngineDrops, files_pb2.ListEngineDropsRequest(
                limit=self._s.engine_drop_batch, min_age_seconds=self._s.engine_drop_min_age_seconds))
        except CallFailed as exc:
            log.warning("listing engine drops failed: %s", exc)
            return 0
        done = 0
        for drop in listed.drops:
            try:
                await self._drop_everywhere(drop.index_id)
            except CallFailed as exc:
                log.warning("dropping deleted index %s failed (attempt %d): %s", drop.index_id, drop.attempts + 1, exc)
                with contextlib.suppress(CallFailed):
                    await self._call("CompleteEngineDrop", self._files.CompleteEngineDrop,
                                     files_pb2.CompleteEngineDropRequest(index_id=drop.index_id, failed=True,
                                                                         error=str(exc)))
                continue
            await self._call("CompleteEngineDrop", self._files.CompleteEngineDrop,
                             files_pb2.CompleteEngineDropRequest(index_id=drop.index_id))
            log.info("dropped the chunks of deleted index %s", drop.index_id)
            done += 1
        return done

    async def run_once(self, stop: asyncio.Event | None = None) -> JobOutcome | None:
        """Claim one job and work it; ``None`` when no job was waiting."""
        response = await self._call(
            "ClaimJob",
            self._files.ClaimJob,
            files_pb2.ClaimJobRequest(worker_id=self.worker_id, lease_seconds=self._s.lease_seconds),
        )
        if not response.found:
            return None
        return await self.process_job(response.job, stop or asyncio.Event())

    async def process_job(self, job: files_pb2.Job, stop: asyncio.Event) -> JobOutcome:
        """Work a claimed job while a heartbeat keeps its lease; stop at once if the lease is lost."""
        log.info("working job %s of index %s (attempt %d)", job.id, job.index_id, job.attempts,
                 extra={"job_id": job.id, "index_id": job.index_id})
        lease_lost = asyncio.Event()
        heartbeat = asyncio.create_task(self._heartbeat(job.id, lease_lost))
        work = asyncio.create_task(self._work(job, stop))
        lost = asyncio.create_task(lease_lost.wait())
        try:
            await asyncio.wait({work, lost}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (heartbeat, lost, work):
                if not task.done():
                    task.cancel()
            await asyncio.gather(heartbeat, lost, work, return_exceptions=True)
        if work.cancelled():
            log.warning("lease on job %s lost; stopped working it", job.id, extra={"job_id": job.id})
            return JobOutcome.LEASE_LOST
        outcome = work.result()
        log.info("job %s: %s", job.id, outcome.value, extra={"job_id": job.id})
        return outcome

    async def _heartbeat(self, job_id: str, lease_lost: asyncio.Event) -> None:
        request = files_pb2.RenewLeaseRequest(
            job_id=job_id, worker_id=self.worker_id, lease_seconds=self._s.lease_seconds
        )
        while True:
            await asyncio.sleep(self._s.lease_seconds / 3)
            try:
                await self._call("RenewLease", self._files.RenewLease, request, lease=True)
            except LeaseLost:
                lease_lost.set()
                return
            except CallFailed as exc:
                # Keep trying: files answers FAILED_PRECONDITION once the lease has really expired.
                log.warning("renewing the lease on job %s failed: %s", job_id, exc)

    async def _work(self, job: files_pb2.Job, stop: asyncio.Event) -> JobOutcome:
        try:
            listed = await self._call(
                "ListJobItems", self._files.ListJobItems, files_pb2.ListJobItemsRequest(job_id=job.id),
                lease=True,
            )
            pending = [item for item in listed.items if item.status != "done"]
            if not await self._work_items(job, pending, stop):
                return JobOutcome.ABANDONED
            await self._call(
                "FinishJob",
                self._files.FinishJob,
                files_pb2.FinishJobRequest(job_id=job.id, worker_id=self.worker_id, status="succeeded"),
                lease=True,
            )
            return JobOutcome.SUCCEEDED
        except LeaseLost:
            return JobOutcome.LEASE_LOST
        except CallFailed as exc:
            if exc.transient:
                log.warning("job %s left to its lease after %s", job.id, exc, extra={"job_id": job.id})
                return JobOutcome.ABANDONED
            return await self._fail(job, str(exc))
        except Exception as exc:
            log.exception("job %s failed", job.id, extra={"job_id": job.id})
            return await self._fail(job, f"internal error: {type(exc).__name__}")

    async def _work_items(self, job: files_pb2.Job, items: Sequence[files_pb2.JobItem],
                          stop: asyncio.Event) -> bool:
        """Deletes one by one, upserts in windows (the next prepared while one is written);
        ``False`` when ``stop`` was set before the work ran out."""
        if job.kind == "rebuild" and job.done_items == 0:
            # The engines' copies are replaced wholesale (a damaged index may not even open): drop
            # them before the first item; a resumed rebuild keeps what earlier attempts wrote.
            await self._drop_everywhere(job.index_id, _engines(job))
        for item in items:
            if item.action not in ("upsert", "rebuild"):
                if stop.is_set():
                    return False
                await self._process_item(job, item)
        window_files, _ = self._sizes(job)
        windows = list(_batched([i for i in items if i.action in ("upsert", "rebuild")], window_files))
        ahead: asyncio.Task[list[_PreparedFile]] | None = None
        try:
            for n, window in enumerate(windows):
                if stop.is_set():
                    return False
                ready = await (ahead or self._prepare_window(job, window))
                ahead = None
                if n + 1 < len(windows) and not stop.is_set():
                    ahead = asyncio.create_task(self._prepare_window(job, windows[n + 1]))
                await self._write_window(job, ready)
            return True
        finally:
            if ahead is not None:
                ahead.cancel()
                await asyncio.gather(ahead, return_exceptions=True)

    async def _fail(self, job: files_pb2.Job, error: str) -> JobOutcome:
        try:
            await self._call(
                "FinishJob",
                self._files.FinishJob,
                files_pb2.FinishJobRequest(
                    job_id=job.id, worker_id=self.worker_id, status="failed", error=error
                ),
                lease=True,
            )
        except LeaseLost:
            return JobOutcome.LEASE_LOST
        except CallFailed as exc:
            log.warning("could not mark job %s failed: %s", job.id, exc, extra={"job_id": job.id})
            return JobOutcome.ABANDONED
        log.error("job %s failed: %s", job.id, error, extra={"job_id": job.id})
        return JobOutcome.FAILED

    async def _process_item(self, job: files_pb2.Job, item: files_pb2.JobItem) -> None:
        """A delete (or an action this worker does not know, committed with an error)."""
        if item.action == "delete":
            if item.parsed_file_id:
                await self._delete_from_engines(job.index_id, item.parsed_file_id)
            await self._complete(job, item)
        else:
            await self._complete(job, item, error=f"unknown job item action {item.action!r}")

    async def _prepare_window(self, job: files_pb2.Job, items: Sequence[files_pb2.JobItem]) -> list[_PreparedFile]:
        """The window's files fetched, parsed and chunked concurrently; the ones that cannot be
        indexed are committed with their error here and left out."""
        prepare = self._prepare_rebuild if job.kind == "rebuild" else self._prepare
        prepared = await self._together(*(prepare(job, item) for item in items))
        return [p for p in prepared if p is not None]

    async def _prepare_rebuild(self, job: files_pb2.Job, item: files_pb2.JobItem) -> _PreparedFile | None:
        """A rebuild item: the stored parsed text chunked again, under the ids its chunks had."""
        try:
            parsed = await self._call(
                "GetParsedFile", self._files.GetParsedFile,
                files_pb2.GetParsedFileRequest(job_id=job.id, worker_id=self.worker_id,
                                               source_file_id=item.source_file_id),
                lease=True,
            )
        except CallFailed as exc:
            if exc.code != grpc.StatusCode.NOT_FOUND:
                raise
            await self._complete(job, item, error="parsed text not found")
            return None
        pages = tuple(Page(p.number, p.start_char, p.end_char) for p in parsed.pages)
        document = ParsedDocument(parsed.text, pages)
        prepared = files_pb2.PrepareParsedFileResponse(parsed_file_id=parsed.parsed_file_id, version=parsed.version,
                                                       index_config_json=parsed.index_config_json)
        config = IndexConfig.from_json(parsed.index_config_json)
        chunks, card = await self._chunks_and_card(job, parsed.file, prepared, document, config)
        return _PreparedFile(item, b"", document, prepared, config, chunks, card)

    async def _prepare(self, job: files_pb2.Job, item: files_pb2.JobItem) -> _PreparedFile | None:
        try:
            source = await self._call(
                "GetSourceFile",
                self._files.GetSourceFile,
                files_pb2.GetSourceFileRequest(source_file_id=item.source_file_id),
                lease=True,
            )
        except CallFailed as exc:
            if exc.code != grpc.StatusCode.NOT_FOUND:
                raise
            await self._complete(job, item, error="source file not found")
            return None
        meta = source.file
        try:
            document = await self.sandbox.parse(source.content, meta.display_name, meta.content_type)
        except ParseError as exc:
            log.warning("file %s failed: %s", meta.display_name, exc, extra={"job_id": job.id})
            await self._complete(job, item, error=str(exc))
            return None
        prepared = await self._call(
            "PrepareParsedFile",
            self._files.PrepareParsedFile,
            files_pb2.PrepareParsedFileRequest(index_id=job.index_id, source_file_id=item.source_file_id),
            lease=True,
        )
        config = IndexConfig.from_json(prepared.index_config_json)
        chunks, card = await self._chunks_and_card(job, meta, prepared, document, config)
        return _PreparedFile(item, source.content, document, prepared, config, chunks, card)

    async def _chunks_and_card(self, job: files_pb2.Job, meta: files_pb2.DirectoryFile,
                               prepared: files_pb2.PrepareParsedFileResponse,
                               document: ParsedDocument, config: IndexConfig) -> tuple[list[Chunk], Chunk]:
        """The file's chunks (with the index's chunking), under ids of its parsed file and version,
        and its file card."""
        pieces = await asyncio.to_thread(
            chunk_text, document.text, document.pages, config.chunking(self._chunking), self._tokenizer
        )
        metadata = chunk_metadata(meta.metadata_json)
        # A directory file always has a unique_id; the id stands in for one from an older catalog.
        source_id = meta.unique_id or meta.id
        chunks = build_chunks(
            pieces,
            index_id=job.index_id,
            parsed_file_id=prepared.parsed_file_id,
            version=prepared.version,
            file_name=meta.display_name,
            metadata=metadata,
            source_id=source_id,
        )
        card = await asyncio.to_thread(
            build_file_card,
            index_id=job.index_id,
            parsed_file_id=prepared.parsed_file_id,
            file_name=meta.display_name,
            metadata=metadata,
            source_id=source_id,
            tokenizer=self._tokenizer,
        )
        return chunks, card

    async def _write_window(self, job: files_pb2.Job, files: Sequence[_PreparedFile]) -> None:
        """Clear the files from both engines, write their chunks in shared batches and their
        cards in one call, then (page images and) commit each item."""
        if not files:
            return
        engines = _engines(job)
        await self._together(*(self._delete_from_engines(job.index_id, f.prepared.parsed_file_id, engines)
                               for f in files))
        chunks = [c for f in files for c in f.chunks]
        for batch in _batched(chunks, self._sizes(job)[1]):
            await self._upsert_chunks(job.index_id, batch, engines)
        await self._upsert_chunks(files_index_id(job.index_id), [f.card for f in files], engines)
        for f in files:
            if job.kind == "rebuild":  # the text and the page images stay as they are
                await self._complete(job, f.item, chunk_count=len(f.chunks),
                                     index_config_json=f.prepared.index_config_json)
                continue
            await self._page_images(job, f.prepared, f.content, f.document, f.config)
            await self._complete(job, f.item, document=f.document, chunk_count=len(f.chunks),
                                 index_config_json=f.prepared.index_config_json)
            log.debug("indexed %s as %s v%d: %d chunks", f.item.source_file_id, f.prepared.parsed_file_id,
                      f.prepared.version, len(f.chunks), extra={"job_id": job.id})
        log.info("indexed %d files, %d chunks", len(files), len(chunks), extra={"job_id": job.id})

    def _sizes(self, job: files_pb2.Job) -> tuple[int, int]:
        """Files per window and chunks per write. A rebuild that does not embed (sparse only) is
        bound by the keyword engine's per-write cost (OpenSearch waits for a refresh per write),
        so it writes in larger batches."""
        if job.kind == "rebuild" and "dense" not in _engines(job):
            return self._s.rebuild_window_files, self._s.rebuild_batch_size
        return self._s.window_files, self._s.batch_size

    def _engine(self, name: str) -> tuple[Any, Any]:
        """The stub and the message module of engine ``name`` (the two have the same shape)."""
        return (self._dense, dense_pb2) if name == "dense" else (self._sparse, sparse_pb2)

    async def _upsert_chunks(self, index_id: str, chunks: Sequence[Chunk],
                             engines: Sequence[str] = ENGINES) -> None:
        """One Upsert of the same chunks to each engine."""
        messages = [chunk_to_pb(c) for c in chunks]
        calls = []
        for name in engines:
            stub, pb = self._engine(name)
            calls.append(self._call(f"{name} Upsert", stub.Upsert, pb.UpsertRequest(index_id=index_id, chunks=messages),
                                    deadline=self._s.upsert_timeout))
        await self._together(*calls)

    async def _delete_from_engines(self, index_id: str, parsed_file_id: str,
                                   engines: Sequence[str] = ENGINES) -> None:
        """The file's chunks and its card, from each engine (a no-op for what is not there)."""
        calls: list[Coroutine[Any, Any, Any]] = []
        for target in (index_id, files_index_id(index_id)):
            for name in engines:
                stub, pb = self._engine(name)
                calls.append(self._call(f"{name} DeleteFile", stub.DeleteFile,
                                        pb.DeleteFileRequest(index_id=target, file_id=parsed_file_id)))
        await self._together(*calls)

    async def _drop_everywhere(self, index_id: str, engines: Sequence[str] = ENGINES) -> None:
        """An index and its file cards, dropped from each engine."""
        calls = []
        for target in (index_id, files_index_id(index_id)):
            for name in engines:
                stub, pb = self._engine(name)
                calls.append(self._call(f"{name} DropIndex", stub.DropIndex, pb.DropIndexRequest(index_id=target)))
        await self._together(*calls)

    async def _page_images(
        self,
        job: files_pb2.Job,
        prepared: files_pb2.PrepareParsedFileResponse,
        content: bytes,
        document: ParsedDocument,
        config: IndexConfig,
    ) -> None:
        """Screenshots of a PDF's pages when the index asks for them; otherwise drop any earlier
        ones the parsed file could have (it was, or may once have been, a PDF)."""
        parsed_file_id = prepared.parsed_file_id
        if document.kind != "pdf":
            # The same parsed file holds every version of its source: an earlier one may have been a PDF.
            if prepared.version > 1:
                await self._clear_page_images(job, parsed_file_id)
            return
        if not config.page_screenshots:
            await self._clear_page_images(job, parsed_file_id)
            return
        started = time.perf_counter()
        try:
            renderer = await asyncio.to_thread(PdfPageRenderer, content, self._s.screenshot_scale)
        except pdfium.PdfiumError as exc:
            log.warning("cannot render %s for screenshots: %s", parsed_file_id, exc, extra={"job_id": job.id})
            await self._clear_page_images(job, parsed_file_id)
            return
        pages = total_bytes = 0
        try:
            limit = self._s.screenshot_max_pages
            if renderer.page_count > limit:
                log.warning("%s has %d pages; screenshots of the first %d only", parsed_file_id,
                            renderer.page_count, limit, extra={"job_id": job.id})
            batches = batch_by_size(renderer.render_all(limit), self._s.screenshot_batch_bytes)
            # Rendering runs in a thread, one batch at a time: only one batch of PNGs is held.
            while (batch := await asyncio.to_thread(next, batches, None)) is not None:
                await self._put_page_images(job, parsed_file_id, batch, replace=pages == 0)
                pages += len(batch)
                total_bytes += sum(image.size for image in batch)
        finally:
            # Waits for a render still running in its thread (cancellation) before freeing the PDF.
            await asyncio.to_thread(renderer.close)
        if pages == 0:
            await self._clear_page_images(job, parsed_file_id)
        log.info("rendered %d of %d pages of %s in %.2f s (%d PNG bytes, scale %.2f)", pages,
                 renderer.page_count, parsed_file_id, time.perf_counter() - started, total_bytes,
                 self._s.screenshot_scale, extra={"job_id": job.id})

    async def _put_page_images(
        self, job: files_pb2.Job, parsed_file_id: str, images: Sequence[PageImage], *, replace: bool
    ) -> None:
        request = files_pb2.PutPageImagesRequest(
            job_id=job.id, worker_id=self.worker_id, parsed_file_id=parsed_file_id, replace=replace,
            images=[
                files_pb2.PageImage(
                    file_id=parsed_file_id, page_index=image.page_index, content=image.content,
                    content_type=PNG_CONTENT_TYPE, width=image.width, height=image.height,
                    size_bytes=image.size,
                )
                for image in images
            ],
        )
        await self._call("PutPageImages", self._files.PutPageImages, request, lease=True)

    async def _clear_page_images(self, job: files_pb2.Job, parsed_file_id: str) -> None:
        try:
            await self._put_page_images(job, parsed_file_id, [], replace=True)
        except CallFailed as exc:
            # A files service without page images has none to clear (a worker upgraded first).
            if exc.code != grpc.StatusCode.UNIMPLEMENTED:
                raise
            log.debug("files does not store page images; nothing to clear")

    async def _complete(
        self,
        job: files_pb2.Job,
        item: files_pb2.JobItem,
        *,
        document: ParsedDocument | None = None,
        chunk_count: int = 0,
        error: str = "",
        index_config_json: str = "",
    ) -> None:
        request = files_pb2.CompleteJobItemRequest(
            job_id=job.id, worker_id=self.worker_id, source_file_id=item.source_file_id,
            chunk_count=chunk_count, error=error, index_config_json=index_config_json,
        )
        if document is not None:
            request.text = document.text
            request.pages.extend(
                files_pb2.Page(number=p.number, start_char=p.start_char, end_char=p.end_char)
                for p in document.pages
            )
        await self._call("CompleteJobItem", self._files.CompleteJobItem, request, lease=True)
        INGEST_ITEMS.labels("failed" if error else "done").inc()
        INGEST_CHUNKS.inc(chunk_count)

    @staticmethod
    async def _together(*calls: Coroutine[Any, Any, _R]) -> list[_R]:
        """Await calls concurrently, results in order; if one fails the others are cancelled and
        its error raised (a lost lease first)."""
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(call) for call in calls]
        except BaseExceptionGroup as group_error:
            errors = list(group_error.exceptions)
            raise next((e for e in errors if isinstance(e, LeaseLost)), errors[0]) from None
        return [task.result() for task in tasks]

    async def _call(
        self,
        name: str,
        method: Callable[..., Awaitable[_R]],
        request: Any,
        *,
        deadline: float | None = None,
        lease: bool = False,
    ) -> _R:
        """One call under a deadline, retried with backoff while the server is UNAVAILABLE.

        ``lease``: the call acts on the claimed job, so FAILED_PRECONDITION means the lease is gone.
        """
        retrying = AsyncRetrying(
            retry=retry_if_exception(_is_unavailable),
            stop=stop_after_attempt(self._s.retry_attempts),
            wait=wait_exponential(multiplier=self._s.retry_initial_backoff, max=self._s.retry_max_backoff)
            + wait_random(0, self._s.retry_initial_backoff),
            before_sleep=lambda state: log.warning("%s unavailable (attempt %d); retrying", name,
                                                   state.attempt_number),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    return await method(request, timeout=deadline or self._s.rpc_timeout)
        except grpc.aio.AioRpcError as exc:
            if lease and exc.code() == grpc.StatusCode.FAILED_PRECONDITION:
                raise LeaseLost(f"{name}: {exc.details()}") from exc
            raise CallFailed(name, exc.code(), exc.details() or "") from exc
        raise AssertionError("unreachable: tenacity either returns or re-raises")
