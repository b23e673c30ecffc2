"""The retrieve use case: fan out to the legs, fuse, rerank, cut, shape.

Degradation policy: when one leg fails with UNAVAILABLE, a timeout, or DATA_LOSS (its index is
damaged) and the other answered, the response carries the other leg's results and says so in
``degraded``; when every leg fails, the error propagates. A failing or slow reranker degrades
to the fused order.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

import grpc

from gateway.admission import Shed
from gateway.backends import Backends, Budget, LegResult
from gateway.fusion import Fused, fuse
from services._proto.quarry.common.v1 import common_pb2
from services.common.convert import chunk_from_pb
from services.common.domain import Chunk, FilterNode
from services.common.telemetry import DEGRADED, RETRIEVE_STAGE_SECONDS

log = logging.getLogger(__name__)

_DEGRADABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED,
               grpc.StatusCode.DATA_LOSS}


@dataclass(frozen=True)
class Plan:
    """A fully resolved retrieval request (defaults applied)."""

    index_id: str
    query: str
    top_k: int
    num_candidates: int
    dense_weight: float
    sparse_weight: float
    fusion: str
    rerank: bool
    rerank_top_n: int | None
    rerank_depth: int
    score_threshold: float | None
    filter: FilterNode | None
    #: Legacy ``dense_similarity_cutoff``: dense hits below this similarity are dropped before fusion.
    dense_cutoff: float | None = None
    #: Weight of the reranker's score in the reranked window's order (see ``blend``).
    rerank_blend: float = 1.0
    #: "stored": late interaction over the token vectors stored at ingest, the rerank service for
    #: a window without them; "model": the rerank service always.
    rerank_source: str = "model"
    #: The rerank call's deadline, capped by what is left of the request's budget.
    rerank_timeout: float | None = None
    #: Each leg's deadline, capped by what is left of the request's budget.
    leg_timeout: float | None = None


@dataclass(frozen=True)
class Result:
    fused: Fused[Chunk]
    rerank_score: float | None

    @classmethod
    def of(cls, fused: Fused[common_pb2.Chunk], rerank_score: float | None) -> Result:
        """A returned result, its chunk converted from the leg's message."""
        chunk = chunk_from_pb(fused.chunk)
        return cls(Fused(chunk, fused.score, fused.dense_score, fused.sparse_score), rerank_score)


@dataclass
class Outcome:
    results: list[Result]
    latency: dict[str, float] = field(default_factory=dict)
    degraded: list[str] = field(default_factory=list)


def _degradable(exc: BaseException) -> bool:
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return True
    return isinstance(exc, grpc.aio.AioRpcError) and exc.code() in _DEGRADABLE


async def run_legs(backends: Backends, plan: Plan, budget: Budget) -> tuple[dict[str, LegResult], list[str]]:
    """Dense and sparse concurrently (a leg with weight 0 is not called at all).

    Returns the legs that answered, by name, and a note per leg degraded away.
    """
    depth = max(plan.num_candidates, plan.top_k)
    timeout = budget.remaining()
    if plan.leg_timeout is not None:
        timeout = min(timeout, plan.leg_timeout)
    calls = {}
    if plan.dense_weight > 0:
        calls["dense"] = backends.dense_search(plan.index_id, plan.query, depth, plan.filter, timeout)
    if plan.sparse_weight > 0:
        calls["sparse"] = backends.sparse_search(plan.index_id, plan.query, depth, plan.filter, timeout)
    outcomes = dict(zip(calls, await asyncio.gather(*calls.values(), return_exceptions=True), strict=True))
    answered = {name: r for name, r in outcomes.items() if isinstance(r, LegResult)}
    degraded = []
    for name, exc in outcomes.items():
        if name in answered:
            continue
        if not answered or not _degradable(exc):
            raise exc  # type: ignore[misc]
        other = next(iter(answered))
        if isinstance(exc, grpc.aio.AioRpcError) and exc.code() == grpc.StatusCode.DATA_LOSS:
            _degrade(degraded, f"{name}_damaged", f"{name} index damaged; {other}-only results until it is "
                     f"rebuilt (POST /api/v1/indexes/{plan.index_id}/rebuild)")
        else:
            _degrade(degraded, f"{name}_failed", f"{name} leg failed ({_describe(exc)}); {other}-only results")
        log.warning("%s leg degraded: %s", name, _describe(exc))
    return answered, degraded


def _degrade(degraded: list[str], reason: str, message: str) -> None:
    """Note a degradation in the answer and count it by ``reason`` (a short, fixed label)."""
    degraded.append(message)
    DEGRADED.labels(reason).inc()


#: Prometheus stage names of the latency keys of an outcome.
_STAGES = {"dense_embed": "embed", "dense": "dense", "sparse": "sparse", "fusion": "fusion", "rerank": "rerank"}


def _describe(exc: BaseException) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        return exc.code().name.lower()
    return type(exc).__name__


def _minmax(values: list[float]) -> list[float]:
    lo, hi = min(values), max(values)
    return [1.0 if hi == lo else (v - lo) / (hi - lo) for v in values]


def blend(rerank: list[float], fused: list[float], weight: float) -> list[float]:
    """The reranked window's scores: ``weight * minmax(rerank) + (1 - weight) * minmax(fused)``.

    Weight 1 keeps the reranker's own scores. Below 1 the fused evidence keeps a say: the packaged
    late-interaction reranker alone lowered nDCG@10 on three of four judged collections, and over
    the dbsf default's candidates only small weights (0.2, the default) never cost more than 1 %
    on any of them (docs/benchmarks.md). The result is that stage's ``rerank_score``.
    """
    if weight >= 1.0 or not rerank:
        return list(rerank)
    r, f = _minmax(rerank), _minmax(fused)
    return [weight * a + (1.0 - weight) * b for a, b in zip(r, f, strict=True)]


async def retrieve(backends: Backends, plan: Plan, budget: Budget) -> Outcome:
    """The retrieve use case under load shedding: a full retrieve stage refuses at once (``Shed``),
    a full rerank stage leaves the fused order, flagged."""
    async with backends.stages.retrieve.admit():
        outcome = await _retrieve(backends, plan, budget)
    for key, stage in _STAGES.items():
        if outcome.latency.get(key, 0.0) > 0:  # 0: a leg not called, or one that failed
            RETRIEVE_STAGE_SECONDS.labels(stage).observe(outcome.latency[key])
    return outcome


async def _retrieve(backends: Backends, plan: Plan, budget: Budget) -> Outcome:
    started = time.perf_counter()
    legs, degraded = await run_legs(backends, plan, budget)
    empty = LegResult([], 0.0)
    dense, sparse = legs.get("dense", empty), legs.get("sparse", empty)
    if plan.dense_cutoff is not None:
        dense = LegResult([h for h in dense.hits if h.score >= plan.dense_cutoff], dense.seconds, dense.embed_seconds)
    latency = {"dense": dense.seconds, "dense_embed": dense.embed_seconds, "sparse": sparse.seconds}
    t0 = time.perf_counter()
    # Only the legs that answered are weighted, so a lone surviving leg keeps its full [0, 1] range.
    fused = fuse(
        dense.hits,
        sparse.hits,
        dense_weight=plan.dense_weight if "dense" in legs else 0.0,
        sparse_weight=plan.sparse_weight if "sparse" in legs else 0.0,
        method=plan.fusion,
    )
    if plan.score_threshold is not None:
        fused = [f for f in fused if f.score >= plan.score_threshold]
    latency["fusion"] = time.perf_counter() - t0
    n = min(plan.top_k, plan.rerank_top_n) if plan.rerank and plan.rerank_top_n else plan.top_k
    results: list[Result]
    if plan.rerank and fused:
        window = fused[: max(plan.rerank_depth, n)]
        t0 = time.perf_counter()
        try:
            timeout = budget.remaining()
            if plan.rerank_timeout is not None:
                timeout = min(timeout, plan.rerank_timeout)
            scores = None
            if plan.rerank_source == "stored":
                scores = await backends.stored_scores(plan.index_id, plan.query, [f.chunk.id for f in window], timeout)
            if scores is None:
                # A model run per window: bounded by the rerank stage's admission.
                async with backends.stages.rerank.admit(within=timeout):
                    scores = await backends.rerank_scores(plan.query, [f.chunk.content for f in window], timeout)
            blended = blend(scores, [f.score for f in window], plan.rerank_blend)
            ranked = sorted(zip(window, blended, strict=True), key=lambda p: (-p[1], p[0].chunk.id))
            results = [Result.of(f, s) for f, s in ranked[:n]]
        except Shed:
            _degrade(degraded, "rerank_shed", "rerank skipped (the rerank stage is saturated); fused order")
            results = [Result.of(f, None) for f in fused[:n]]
        except Exception as exc:
            if not _degradable(exc):
                raise
            _degrade(degraded, "rerank_failed", f"rerank failed ({_describe(exc)}); fused order")
            results = [Result.of(f, None) for f in fused[:n]]
        latency["rerank"] = time.perf_counter() - t0
    else:
        results = [Result.of(f, None) for f in fused[:n]]
    latency["retrieve"] = time.perf_counter() - started
    return Outcome(results, latency, degraded)
