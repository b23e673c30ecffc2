from __future__ import annotations

import pytest

from gateway.fusion import RRF_K, fuse
from services.common.domain import Chunk, Hit


def hits(*pairs: tuple[str, float]) -> list[Hit]:
    return [Hit(Chunk(id=cid, index_id="i", file_id="f", content=cid), score) for cid, score in pairs]


def test_relative_score_normalises_each_leg_and_weights_them() -> None:
    dense = hits(("a", 0.9), ("b", 0.5), ("c", 0.1))
    sparse = hits(("c", 12.0), ("a", 2.0))
    fused = fuse(dense, sparse, dense_weight=0.5, sparse_weight=0.5)
    scores = {f.chunk.id: round(f.score, 6) for f in fused}
    # a: dense 1.0, sparse 0.0 -> 0.5 ; b: dense 0.5, absent in sparse -> 0.25 ; c: dense 0, sparse 1 -> 0.5
    assert scores == {"a": 0.5, "b": 0.25, "c": 0.5}
    assert [f.chunk.id for f in fused] == ["a", "c", "b"]  # ties broken by id
    assert fused[0].dense_score == 0.9 and fused[0].sparse_score == 2.0
    assert fused[2].sparse_score is None


def test_weight_zero_ignores_a_leg() -> None:
    fused = fuse(hits(("a", 0.9)), hits(("b", 3.0)), dense_weight=0.0, sparse_weight=1.0)
    assert [f.chunk.id for f in fused] == ["b"]
    assert fused[0].score == 1.0


def test_rrf_scales_a_double_first_place_to_one() -> None:
    fused = fuse(hits(("a", 0.9), ("b", 0.1)), hits(("a", 5.0)), dense_weight=1.0, sparse_weight=1.0, method="rrf")
    assert fused[0].chunk.id == "a"
    assert fused[0].score == pytest.approx(1.0)
    assert fused[1].score == pytest.approx((1 / (RRF_K + 2)) / (2 / (RRF_K + 1)))


def test_dbsf_clips_to_unit_range_and_keeps_order() -> None:
    dense = hits(*[(f"d{i}", 1.0 - i * 0.1) for i in range(6)])
    fused = fuse(dense, [], dense_weight=1.0, sparse_weight=0.0, method="dbsf")
    assert [f.chunk.id for f in fused] == [f"d{i}" for i in range(6)]
    assert all(0.0 <= f.score <= 1.0 for f in fused)


def test_inputs_are_not_mutated_and_empty_legs_fuse_to_nothing() -> None:
    dense = hits(("a", 0.3))
    before = list(dense)
    fuse(dense, [], dense_weight=0.5, sparse_weight=0.5)
    assert dense == before
    assert fuse([], [], dense_weight=0.5, sparse_weight=0.5) == []


def test_dbsf_orders_outliers_clipped_to_one_by_their_scores_not_their_ids() -> None:
    """A query's few strong BM25 matches lie beyond mean + 3 sigma: all clip to 1, and their order
    must still follow the leg's scores (it used to follow the chunk ids, which are random)."""
    sparse = hits(("z-best", 40.0), ("a-second", 30.0), *[(f"m{i:02d}", 5.0 + 0.01 * i) for i in range(60)])
    fused = fuse([], sparse, dense_weight=0.0, sparse_weight=1.0, method="dbsf")
    assert [f.score for f in fused[:2]] == [1.0, 1.0]
    assert [f.chunk.id for f in fused[:2]] == ["z-best", "a-second"]
    assert [f.chunk.id for f in fused[2:]] == [f"m{i:02d}" for i in reversed(range(60))]

    dense = hits(("a-second", 0.9), ("z-best", 0.9), *[(f"m{i:02d}", 0.2) for i in range(60)])
    both = fuse(dense, sparse, dense_weight=0.5, sparse_weight=0.5, method="dbsf")
    assert [f.chunk.id for f in both[:2]] == ["z-best", "a-second"]
