"""The retrieve use case against fake backends: fan-out, degradation, fusion, rerank, cut."""

from __future__ import annotations

from collections.abc import Sequence

import grpc
import pytest

from gateway.admission import Shed, Stage
from gateway.backends import Backends, Budget, LegResult, Stages
from gateway.retrieval import Plan, blend, retrieve
from services._proto.quarry.common.v1 import common_pb2
from services.common.convert import hit_to_pb
from services.common.domain import Chunk, FilterNode, Hit


def rpc_error(code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details=code.name)


def hits(*pairs: tuple[str, float]) -> list[common_pb2.Hit]:
    """What a leg answers: hit messages, as on the wire."""
    return [hit_to_pb(Hit(Chunk(id=cid, index_id="i", file_id="f", content=f"text {cid}"), score))
            for cid, score in pairs]


class FakeBackends(Backends):
    """Backends whose legs and reranker answer from fixed data or fail with a given status."""

    def __init__(self, dense: list[common_pb2.Hit] | grpc.StatusCode, sparse: list[common_pb2.Hit] | grpc.StatusCode,
                 rerank: dict[str, float] | grpc.StatusCode | None = None,
                 stored: dict[str, float] | None = None) -> None:
        self._answers = {"dense": dense, "sparse": sparse}
        self._rerank = rerank
        self._stored = stored
        self.calls: list[str] = []
        self.stages = Stages()

    async def _leg(self, name: str) -> LegResult:
        self.calls.append(name)
        answer = self._answers[name]
        if isinstance(answer, grpc.StatusCode):
            raise rpc_error(answer)
        return LegResult(answer, 0.001)

    async def dense_search(self, index_id: str, query: str, top_k: int, flt: FilterNode | None,
                           timeout: float) -> LegResult:
        return await self._leg("dense")

    async def sparse_search(self, index_id: str, query: str, top_k: int, flt: FilterNode | None,
                            timeout: float) -> LegResult:
        return await self._leg("sparse")

    async def stored_scores(self, index_id: str, query: str, chunk_ids: Sequence[str],
                            timeout: float) -> list[float] | None:
        self.calls.append("stored")
        if self._stored is None or any(c not in self._stored for c in chunk_ids):
            return None
        return [self._stored[c] for c in chunk_ids]

    async def rerank_scores(self, query: str, passages: Sequence[str], timeout: float) -> list[float]:
        self.calls.append("rerank")
        self.rerank_timeout = timeout
        if isinstance(self._rerank, grpc.StatusCode):
            raise rpc_error(self._rerank)
        assert self._rerank is not None
        return [self._rerank[p.removeprefix("text ")] for p in passages]


def plan(**overrides: object) -> Plan:
    base: dict[str, object] = dict(
        index_id="i", query="q", top_k=10, num_candidates=10, dense_weight=0.5, sparse_weight=0.5,
        fusion="relative_score", rerank=False, rerank_top_n=None, rerank_depth=20, score_threshold=None, filter=None,
    )
    return Plan(**{**base, **overrides})  # type: ignore[arg-type]


DENSE = hits(("a", 0.9), ("b", 0.5), ("c", 0.1))
SPARSE = hits(("c", 9.0), ("d", 3.0))


async def test_both_legs_are_fused() -> None:
    out = await retrieve(FakeBackends(DENSE, SPARSE), plan(), Budget(5))
    assert [r.fused.chunk.id for r in out.results] == ["a", "c", "b", "d"]
    assert out.degraded == []


async def test_a_zero_weight_leg_is_not_called() -> None:
    backends = FakeBackends(DENSE, SPARSE)
    out = await retrieve(backends, plan(dense_weight=0.0), Budget(5))
    assert backends.calls == ["sparse"]
    assert [r.fused.chunk.id for r in out.results] == ["c", "d"]


async def test_an_unavailable_leg_degrades_to_the_other() -> None:
    out = await retrieve(FakeBackends(DENSE, grpc.StatusCode.UNAVAILABLE), plan(), Budget(5))
    assert [r.fused.chunk.id for r in out.results] == ["a", "b", "c"]
    assert out.results[0].fused.score == pytest.approx(1.0)  # the surviving leg keeps its full range
    assert out.degraded == ["sparse leg failed (unavailable); dense-only results"]


@pytest.mark.parametrize("code", [grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND])
async def test_a_deterministic_leg_error_is_raised(code: grpc.StatusCode) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await retrieve(FakeBackends(DENSE, code), plan(), Budget(5))
    assert err.value.code() == code


async def test_when_every_leg_fails_the_error_propagates() -> None:
    with pytest.raises(grpc.aio.AioRpcError):
        await retrieve(FakeBackends(grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED), plan(),
                       Budget(5))


async def test_rerank_reorders_the_window_and_top_n_cuts() -> None:
    backends = FakeBackends(DENSE, SPARSE, rerank={"a": 0.1, "b": 0.9, "c": 0.5, "d": 0.3})
    out = await retrieve(backends, plan(rerank=True, rerank_top_n=2), Budget(5))
    assert [(r.fused.chunk.id, r.rerank_score) for r in out.results] == [("b", 0.9), ("c", 0.5)]


async def test_a_failing_reranker_leaves_the_fused_order() -> None:
    out = await retrieve(FakeBackends(DENSE, SPARSE, rerank=grpc.StatusCode.DEADLINE_EXCEEDED),
                         plan(rerank=True, top_k=2), Budget(5))
    assert [(r.fused.chunk.id, r.rerank_score) for r in out.results] == [("a", None), ("c", None)]
    assert out.degraded == ["rerank failed (deadline_exceeded); fused order"]


async def test_score_threshold_applies_to_the_fused_score() -> None:
    out = await retrieve(FakeBackends(DENSE, SPARSE), plan(score_threshold=0.3), Budget(5))
    assert [r.fused.chunk.id for r in out.results] == ["a", "c"]
    assert all(r.fused.score >= 0.3 for r in out.results)


async def test_a_blend_keeps_the_fused_evidence_in_the_reranked_order() -> None:
    backends = FakeBackends(DENSE, SPARSE, rerank={"a": 0.1, "b": 0.9, "c": 0.5, "d": 0.3})
    alone = await retrieve(backends, plan(rerank=True), Budget(5))
    mixed = await retrieve(backends, plan(rerank=True, rerank_blend=0.5), Budget(5))
    assert alone.results[0].fused.chunk.id == "b"
    scores = [r.rerank_score for r in mixed.results]
    assert scores == sorted(scores, reverse=True)  # type: ignore[type-var]
    assert all(s is not None and 0.0 <= s <= 1.0 for s in scores)
    assert {r.fused.chunk.id for r in mixed.results} == {r.fused.chunk.id for r in alone.results}


def test_blend_arithmetic() -> None:
    assert blend([0.2, 0.8, 0.5], [1.0, 0.0, 0.5], 1.0) == [0.2, 0.8, 0.5]
    assert blend([0.2, 0.8, 0.5], [1.0, 0.0, 0.5], 0.5) == pytest.approx([0.5, 0.5, 0.5])
    assert blend([0.2, 0.8], [0.3, 0.3], 0.5) == pytest.approx([0.5, 1.0])  # equal fused scores: all 1
    assert blend([], [], 0.5) == []


async def test_the_rerank_call_has_its_own_deadline_within_the_budget() -> None:
    backends = FakeBackends(DENSE, SPARSE, rerank={"a": 0.1, "b": 0.9, "c": 0.5, "d": 0.3})
    await retrieve(backends, plan(rerank=True, rerank_timeout=0.5), Budget(5))
    assert backends.rerank_timeout == 0.5
    await retrieve(backends, plan(rerank=True, rerank_timeout=30.0), Budget(5))
    assert 0 < backends.rerank_timeout <= 5


async def test_a_damaged_leg_degrades_with_a_pointer_to_the_rebuild() -> None:
    out = await retrieve(FakeBackends(DENSE, grpc.StatusCode.DATA_LOSS), plan(), Budget(5))
    assert [r.fused.chunk.id for r in out.results] == ["a", "b", "c"]
    assert out.degraded == ["sparse index damaged; dense-only results until it is rebuilt "
                            "(POST /api/v1/indexes/i/rebuild)"]


async def test_a_full_rerank_stage_keeps_the_fused_order_at_once() -> None:
    backends = FakeBackends(DENSE, SPARSE, rerank={"a": 0.1, "b": 0.9, "c": 0.5, "d": 0.3})
    backends.stages = Stages(rerank=Stage("rerank", concurrency=1, queue=0))
    async with backends.stages.rerank.admit():  # every slot taken
        out = await retrieve(backends, plan(rerank=True, top_k=2), Budget(5))
    assert "rerank" not in backends.calls
    assert [(r.fused.chunk.id, r.rerank_score) for r in out.results] == [("a", None), ("c", None)]
    assert out.degraded == ["rerank skipped (the rerank stage is saturated); fused order"]


async def test_a_full_retrieve_stage_refuses_at_once() -> None:
    backends = FakeBackends(DENSE, SPARSE)
    backends.stages = Stages(retrieve=Stage("retrieve", concurrency=1, queue=0))
    async with backends.stages.retrieve.admit():
        with pytest.raises(Shed):
            await retrieve(backends, plan(), Budget(5))
    assert backends.calls == []


async def test_stored_token_vectors_rerank_without_the_rerank_service() -> None:
    backends = FakeBackends(DENSE, SPARSE, rerank={"a": 0.9, "b": 0.1, "c": 0.1, "d": 0.1},
                            stored={"a": 0.1, "b": 0.9, "c": 0.5, "d": 0.3})
    backends.stages = Stages(rerank=Stage("rerank", concurrency=1, queue=0))
    async with backends.stages.rerank.admit():  # a saturated model stage does not concern it
        out = await retrieve(backends, plan(rerank=True, rerank_top_n=2, rerank_source="stored"), Budget(5))
    assert "rerank" not in backends.calls
    assert [(r.fused.chunk.id, r.rerank_score) for r in out.results] == [("b", 0.9), ("c", 0.5)]
    assert out.degraded == []


async def test_a_window_without_stored_vectors_goes_to_the_rerank_service() -> None:
    backends = FakeBackends(DENSE, SPARSE, rerank={"a": 0.1, "b": 0.9, "c": 0.5, "d": 0.3},
                            stored={"a": 0.9})  # b, c and d were indexed without token vectors
    out = await retrieve(backends, plan(rerank=True, rerank_top_n=2, rerank_source="stored"), Budget(5))
    assert backends.calls[-2:] == ["stored", "rerank"]
    assert [(r.fused.chunk.id, r.rerank_score) for r in out.results] == [("b", 0.9), ("c", 0.5)]


async def test_the_model_source_never_asks_for_stored_vectors() -> None:
    backends = FakeBackends(DENSE, SPARSE, rerank={"a": 0.1, "b": 0.9, "c": 0.5, "d": 0.3},
                            stored={"a": 0.9, "b": 0.1, "c": 0.1, "d": 0.1})
    out = await retrieve(backends, plan(rerank=True, rerank_top_n=1, rerank_source="model"), Budget(5))
    assert "stored" not in backends.calls
    assert out.results[0].fused.chunk.id == "b"
