"""The gateway's use cases, independent of the transport: the HTTP routes and the gRPC servicer
only convert their requests into these typed inputs and the outcomes into their responses.

- ``authenticate``: an ``authorization`` value -> the caller's identity (``Unauthenticated``).
- ``retrieve``: a ``RetrieveQuery`` -> an ``Answer``, in any retrieval mode. The one place that
  builds a ``Plan`` from the defaults, looks the answer up in the response cache (keyed by the
  plan, so equivalent requests on either surface share an entry) and accounts the latency.
- ``find`` / ``grep`` / ``read`` / ``list_indexes`` / ``index`` / ``engine_health``: the catalog
  look-ups, each under the request's budget.

Errors are the backends' ``grpc.aio.AioRpcError`` (NOT_FOUND for an unknown or foreign index),
``FilterError`` for a bad field (its ``loc`` names it), ``Unauthenticated``, ``Shed`` and
``TimeoutError`` (the budget ran out); each transport maps them once.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway import pipelines as modes
from gateway.auth import Authenticator
from gateway.backends import Backends, Budget
from gateway.cache import Cache, IndexCache, cache_key
from gateway.filters import FilterError
from gateway.fusion import Fused
from gateway.retrieval import Outcome, Plan, Result, retrieve
from gateway.settings import GatewaySettings
from services._proto.quarry.files.v1 import files_pb2
from services.common.domain import Chunk, FilterNode, chunk_from_stored, stored_fields
from services.common.telemetry import RETRIEVE_STAGE_SECONDS

MODES = ("chunks", "files_via_content", "files_via_metadata", "auto_routed")


@dataclass(frozen=True)
class RetrieveQuery:
    """A retrieve as either surface asks for it; ``None`` takes the gateway's default."""

    index_id: str
    query: str
    top_k: int | None = None
    num_candidates: int | None = None
    dense_weight: float | None = None
    sparse_weight: float | None = None
    fusion: str | None = None
    rerank: bool | None = None
    rerank_top_n: int | None = None
    score_threshold: float | None = None
    filter: FilterNode | None = None
    dense_cutoff: float | None = None
    mode: str = "chunks"
    files_top_k: int | None = None
    #: Where a request names the weights (an error naming both when neither leg is left).
    weights_loc: tuple[str | int, ...] = ("body", "vector_pipeline_weight")


def plan_for(q: RetrieveQuery, settings: GatewaySettings) -> Plan:
    """The one place defaults are applied: a fully resolved plan (``FilterError`` when no leg is left)."""
    d = settings.defaults
    plan = Plan(
        index_id=q.index_id,
        query=q.query,
        top_k=min(q.top_k or d.top_k, d.max_top_k),
        num_candidates=q.num_candidates or d.num_candidates,
        dense_weight=d.dense_weight if q.dense_weight is None else q.dense_weight,
        sparse_weight=d.sparse_weight if q.sparse_weight is None else q.sparse_weight,
        fusion=q.fusion or d.fusion,
        rerank=d.rerank_enabled if q.rerank is None else q.rerank,
        rerank_top_n=q.rerank_top_n,
        rerank_depth=d.rerank_depth,
        rerank_blend=d.rerank_blend,
        rerank_source=d.rerank_source,
        rerank_timeout=d.rerank_timeout_seconds,
        leg_timeout=d.leg_timeout_seconds,
        score_threshold=q.score_threshold,
        filter=q.filter,
        dense_cutoff=q.dense_cutoff,
    )
    if plan.dense_weight <= 0 and plan.sparse_weight <= 0:
        raise FilterError(q.weights_loc, "the dense and the sparse weight cannot both be 0")
    return plan


@dataclass(frozen=True)
class FileHit:
    """A file of a files_* mode: its representative chunk, score and whole parsed text."""

    chunk: Chunk
    score: float
    text: str


@dataclass
class Answer:
    """A retrieve's outcome, whichever surface asked."""

    mode: str
    results: list[Result] = field(default_factory=list)
    files: list[FileHit] = field(default_factory=list)
    #: (parsed file id, 0-based page) of the results' stored page screenshots.
    pages: set[tuple[str, int]] = field(default_factory=set)
    latency: dict[str, float] = field(default_factory=dict)
    degraded: list[str] = field(default_factory=list)
    cached: bool = False
    routing_reason: str | None = None

    def attachment_pages(self, chunk: Chunk) -> list[int]:
        """The 0-based pages of ``chunk`` whose screenshot is stored (what both surfaces list)."""
        if chunk.page_start <= 0:
            return []
        pages = range(chunk.page_start, max(chunk.page_start, chunk.page_end) + 1)
        return [p - 1 for p in pages if (chunk.file_id, p - 1) in self.pages]

    def touched(self) -> list[tuple[Chunk, float]]:
        """The chunks the answer returns with their shown scores (a file's representative chunk)."""
        if self.files:
            return [(f.chunk, f.score) for f in self.files]
        return [(r.fused.chunk, modes.result_score(r)) for r in self.results]

    # The cache entry: every surface renders from this, so both share it.
    def dumps(self) -> bytes:
        return json.dumps({
            "mode": self.mode, "routing_reason": self.routing_reason, "pages": sorted(self.pages),
            "results": [[_chunk_json(r.fused.chunk), r.fused.score, r.fused.dense_score, r.fused.sparse_score,
                         r.rerank_score] for r in self.results],
            "files": [[_chunk_json(f.chunk), f.score, f.text] for f in self.files],
        }, separators=(",", ":")).encode()

    @classmethod
    def loads(cls, raw: bytes) -> Answer:
        data = json.loads(raw)
        return cls(
            mode=data["mode"], routing_reason=data["routing_reason"], cached=True,
            pages={(p[0], p[1]) for p in data["pages"]},
            results=[Result(Fused(_chunk_of(c), s, d, sp), r) for c, s, d, sp, r in data["results"]],
            files=[FileHit(_chunk_of(c), s, t) for c, s, t in data["files"]],
        )


def _chunk_json(c: Chunk) -> dict[str, Any]:
    return {"id": c.id, "index_id": c.index_id, "file_id": c.file_id, "content": c.content, **stored_fields(c)}


def _chunk_of(d: dict[str, Any]) -> Chunk:
    return chunk_from_stored(d["id"], d["index_id"], d["file_id"], d["content"], d)


def _plan_key(plan: Plan, q: RetrieveQuery, want_pages: bool) -> dict[str, Any]:
    # repr, not dataclasses.asdict: asdict would spell And, Or and their children alike.
    return {"plan": repr(plan), "mode": q.mode, "files_top_k": q.files_top_k or 1, "pages": want_pages}


class UseCases:
    """What the gateway does, given its backends: one instance per process, shared by both surfaces."""

    def __init__(self, settings: GatewaySettings, backends: Backends, cache: Cache, indexes: IndexCache,
                 auth: Authenticator) -> None:
        self.settings = settings
        self.backends = backends
        self.cache = cache
        self.indexes = indexes
        self.auth = auth

    def budget(self, deadline: float | None = None) -> Budget:
        """A request's budget: the gateway's request timeout, or the caller's deadline when sooner."""
        seconds = self.settings.request_timeout_seconds
        return Budget(seconds if deadline is None else min(seconds, deadline))

    def _catalog_timeout(self, budget: Budget | None) -> float:
        timeout = self.settings.catalog_timeout_seconds
        return timeout if budget is None else min(timeout, budget.remaining())

    async def authenticate(self, authorization: str) -> files_pb2.Identity:
        return await self.auth.identity(authorization, self.backends.files)

    async def index(self, project_id: str, index_id: str, *, for_query: bool = False,
                    budget: Budget | None = None) -> files_pb2.Index:
        """The index if it belongs to the project (NOT_FOUND otherwise). ``for_query``: a retrieve,
        which may use the index as an earlier request read it (``IndexCache``); everything else
        reads it afresh, and that refreshes the retrieves' view."""
        if for_query and (known := self.indexes.get(project_id, index_id)) is not None:
            return known
        started = time.perf_counter()
        index: files_pb2.Index = await self.backends.files.GetIndex(
            files_pb2.GetIndexRequest(project_id=project_id, index_id=index_id),
            timeout=self._catalog_timeout(budget),
        )
        if for_query:
            RETRIEVE_STAGE_SECONDS.labels("catalog").observe(time.perf_counter() - started)
        self.indexes.put(project_id, index, index_id)
        return index

    async def retrieve(self, project_id: str, q: RetrieveQuery, budget: Budget, *,
                       want_pages: bool = True) -> tuple[files_pb2.Index, Answer]:
        """Retrieve in ``q.mode``; a non-degraded answer is cached under the index's generation.
        ``want_pages``: look up the results' stored page screenshots (v2 attachments)."""
        started = time.perf_counter()
        if q.mode not in MODES:
            raise FilterError(("body", "retrieval_mode"), f"unknown retrieval mode {q.mode!r}")
        plan = plan_for(q, self.settings)
        index = await self.index(project_id, q.index_id, for_query=True, budget=budget)
        key = cache_key("retrieve", index.id, index.generation, _plan_key(plan, q, want_pages))
        if (hit := await self.cache.get(key)) is not None:
            answer = Answer.loads(hit)
        else:
            answer = await self._run(project_id, index, plan, q, budget, want_pages)
            if not answer.degraded:  # never cache a degraded answer
                await self.cache.set(key, answer.dumps(), self.settings.cache_ttl_seconds)
        answer.latency["total"] = time.perf_counter() - started
        return index, answer

    async def _run(self, project_id: str, index: files_pb2.Index, plan: Plan, q: RetrieveQuery, budget: Budget,
                   want_pages: bool) -> Answer:
        mode, reason, route_seconds = q.mode, None, 0.0
        if mode == "auto_routed":
            t0 = time.perf_counter()
            mode, reason = await modes.route(self.backends, plan, budget)
            route_seconds = time.perf_counter() - t0
        if mode == "chunks":
            outcome: Outcome = await retrieve(self.backends, plan, budget)
            answer = Answer(mode, results=outcome.results)
            if want_pages:
                answer.pages = await self._stored_pages(project_id, index, outcome.results, budget)
        else:
            pick = modes.files_via_content if mode == "files_via_content" else modes.files_via_metadata
            chosen, outcome = await pick(self.backends, plan, q.files_top_k or 1, budget)
            texts = await modes.read_whole(self.backends, project_id, index.id, chosen,
                                           self.settings.max_file_node_chars, budget.remaining())
            answer = Answer(mode, files=[FileHit(f.chunk, f.score, t) for f, t in zip(chosen, texts, strict=True)])
        answer.routing_reason = reason
        answer.degraded = list(outcome.degraded)
        answer.latency = dict(outcome.latency)
        if route_seconds:
            answer.latency["routing"] = route_seconds
        return answer

    async def _stored_pages(self, project_id: str, index: files_pb2.Index, results: Sequence[Result],
                            budget: Budget) -> set[tuple[str, int]]:
        if not results or not modes.index_config(index).get("page_screenshots"):
            return set()
        file_ids = list(dict.fromkeys(r.fused.chunk.file_id for r in results))
        listing = await self.backends.files.ListPageImages(
            files_pb2.ListPageImagesRequest(project_id=project_id, file_ids=file_ids),
            timeout=self._catalog_timeout(budget),
        )
        return {(i.file_id, i.page_index) for i in listing.items}

    # ---- files ---------------------------------------------------------------------------

    async def find(self, project_id: str, index_id: str, name: str | None, contains: str | None,
                   page_size: int | None, page_token: str | None,
                   budget: Budget | None = None) -> files_pb2.FindFilesResponse:
        response: files_pb2.FindFilesResponse = await self.backends.files.FindFiles(
            files_pb2.FindFilesRequest(
                project_id=project_id, index_id=index_id, file_name=name or "", file_name_contains=contains or "",
                page_size=page_size or 0, page_token=page_token or "",
            ),
            timeout=self._catalog_timeout(budget),
        )
        return response

    async def grep(self, project_id: str, index_id: str, file_id: str, pattern: str, context_chars: int | None,
                   page_size: int | None, page_token: str | None,
                   budget: Budget | None = None) -> files_pb2.GrepFileResponse:
        budget = budget or self.budget()
        response: files_pb2.GrepFileResponse = await self.backends.files.GrepFile(
            files_pb2.GrepFileRequest(
                project_id=project_id, index_id=index_id, file_id=file_id, pattern=pattern,
                context_chars=context_chars or 0, page_size=page_size or 0, page_token=page_token or "",
            ),
            timeout=budget.remaining(),
        )
        return response

    async def read(self, project_id: str, index_id: str, file_id: str, offset: int | None, max_length: int | None,
                   budget: Budget | None = None) -> str:
        response = await self.backends.files.ReadFile(
            files_pb2.ReadFileRequest(
                project_id=project_id, index_id=index_id, file_id=file_id, offset=offset or 0,
                max_length=max_length or 0, has_max_length=max_length is not None,
            ),
            timeout=self._catalog_timeout(budget),
        )
        return str(response.content)

    async def list_indexes(self, project_id: str, page_size: int | None, page_token: str | None,
                           source_directory_id: str | None,
                           budget: Budget | None = None) -> files_pb2.ListIndexesResponse:
        response: files_pb2.ListIndexesResponse = await self.backends.files.ListIndexes(
            files_pb2.ListIndexesRequest(
                project_id=project_id, page_size=page_size or 0, page_token=page_token or "",
                source_directory_id=source_directory_id or "",
            ),
            timeout=self._catalog_timeout(budget),
        )
        return response

    async def engine_health(self, index_id: str) -> dict[str, str]:
        """Per engine: "ok", "damaged: <reason>", or "unknown" when the engine did not answer."""
        damaged = await self.backends.damaged_indexes()
        if damaged is None:
            return {"sparse": "unknown"}
        return {"sparse": f"damaged: {damaged[index_id]}" if index_id in damaged else "ok"}
