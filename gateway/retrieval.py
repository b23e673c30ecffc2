"""The retrieve use case: fan out to the legs, fuse, rerank, cut, shape.

Degradation policy: when one leg fails with UNAVAILABLE or a timeout and the other answered,
the response carries the other leg's results and says so in ``degraded``; when every leg
fails, the error propagates. A failing or slow reranker degrades to the fused order.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

import grpc

from gateway.backends import Backends, Budget, LegResult
from gateway.fusion import Fused, fuse
from services.common.domain import FilterNode

log = logging.getLogger(__name__)

_DEGRADABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED}


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


@dataclass(frozen=True)
class Result:
    fused: Fused
    rerank_score: float | None


@dataclass
class Outcome:
    results: list[Result]
    latency: dict[str, float] = field(default_factory=dict)
    degraded: list[str] = field(default_factory=list)


def _degradable(exc: BaseException) -> bool:
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return True
    return isinstance(exc, grpc.aio.AioRpcError) and exc.code() in _DEGRADABLE


async def run_legs(backends: Backends, plan: Plan, budget: Budget) -> tuple[LegResult, LegResult, list[str]]:
    """Dense and sparse concurrently; a leg with weight 0 is not called at all."""
    depth = max(plan.num_candidates, plan.top_k)
    failed = LegResult([], 0.0, failed=True)
    legs: dict[str, asyncio.Task[LegResult]] = {}
    async with asyncio.TaskGroup() as group:
        timeout = budget.remaining()
        if plan.dense_weight > 0:
            legs["dense"] = group.create_task(_guard(
                backends.dense_search(plan.index_id, plan.query, depth, plan.filter, timeout)))
        if plan.sparse_weight > 0:
            legs["sparse"] = group.create_task(_guard(
                backends.sparse_search(plan.index_id, plan.query, depth, plan.filter, timeout)))
    outcomes = {name: task.result() for name, task in legs.items()}
    failures = {n: r for n, r in outcomes.items() if isinstance(r, BaseException)}
    if failures and len(failures) == len(outcomes):
        raise next(iter(failures.values()))
    degraded = []
    for name, exc in failures.items():
        if not _degradable(exc):
            raise exc
        other = "sparse" if name == "dense" else "dense"
        degraded.append(f"{name} leg failed ({_describe(exc)}); {other}-only results")
        log.warning("%s leg degraded: %s", name, _describe(exc))
    dense = outcomes.get("dense")
    sparse = outcomes.get("sparse")
    return (
        dense if isinstance(dense, LegResult) else failed,
        sparse if isinstance(sparse, LegResult) else failed,
        degraded,
    )


async def _guard(coro: object) -> LegResult | BaseException:
    try:
        return await coro  # type: ignore[no-any-return, misc]
    except Exception as exc:  # collected and judged by the degradation policy
        return exc


def _describe(exc: BaseException) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        return exc.code().name.lower()
    return type(exc).__name__


async def retrieve(backends: Backends, plan: Plan, budget: Budget) -> Outcome:
    started = time.perf_counter()
    dense, sparse, degraded = await run_legs(backends, plan, budget)
    latency = {"dense": dense.seconds, "dense_embed": dense.embed_seconds, "sparse": sparse.seconds}
    t0 = time.perf_counter()
    # A failed leg gets weight 0, so the surviving leg's scores keep their full [0, 1] range.
    fused = fuse(
        dense.hits,
        sparse.hits,
        dense_weight=0.0 if dense.failed else plan.dense_weight,
        sparse_weight=0.0 if sparse.failed else plan.sparse_weight,
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
            scores = await backends.rerank_scores(plan.query, [f.chunk.content for f in window],
                                                  budget.remaining())
            ranked = sorted(zip(window, scores, strict=True), key=lambda p: (-p[1], p[0].chunk.id))
            results = [Result(f, s) for f, s in ranked[:n]]
        except Exception as exc:
            if not _degradable(exc):
                raise
            degraded.append(f"rerank failed ({_describe(exc)}); fused order")
            results = [Result(f, None) for f in fused[:n]]
        latency["rerank"] = time.perf_counter() - t0
    else:
        results = [Result(f, None) for f in fused[:n]]
    latency["retrieve"] = time.perf_counter() - started
    return Outcome(results, latency, degraded)
