"""Fusion of the dense and sparse rankings. Pure functions over hand-built rankings.

- ``relative_score`` (default): min-max normalise each leg's scores to [0, 1], then a convex
  combination with the leg weights. A chunk missing from a leg contributes 0 for that leg.
- ``dbsf``: distribution-based score fusion: each leg normalised with mean +- 3 standard
  deviations clipped to [0, 1], then the same convex combination. Clipping makes the outliers
  of a leg tie at 1 (a query's few strong BM25 matches often lie beyond mean + 3 sigma), so
  fused ties are ordered by the same combination of the unclipped values: the reported score
  stays in [0, 1], and the order keeps what the clipping threw away.
- ``rrf``: reciprocal rank fusion, sum of weight / (k + rank), scaled so a chunk ranked first by
  every leg with weight > 0 scores 1.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

RRF_K = 60


class _Identified(Protocol):
    @property
    def id(self) -> str: ...


C = TypeVar("C", bound=_Identified)
C_co = TypeVar("C_co", bound=_Identified, covariant=True)


class Ranked(Protocol[C_co]):
    """A leg's hit: a domain ``Hit`` or the wire message itself (the gateway fuses the legs'
    messages and converts only the chunks it returns)."""

    @property
    def chunk(self) -> C_co: ...

    @property
    def score(self) -> float: ...


@dataclass(frozen=True, slots=True)
class Fused(Generic[C]):
    chunk: C
    score: float
    dense_score: float | None
    sparse_score: float | None


def _minmax(scores: Sequence[float]) -> list[float]:
    if not scores:
        return []
    lo, hi = min(scores), max(scores)
    if hi - lo <= 1e-12:
        return [1.0] * len(scores)
    return [(s - lo) / (hi - lo) for s in scores]


def _dbsf(scores: Sequence[float]) -> list[float]:
    """Scores on the scale where mean - 3 sigma is 0 and mean + 3 sigma is 1, not yet clipped."""
    if not scores:
        return []
    if len(scores) == 1:
        return [1.0]
    mean = statistics.fmean(scores)
    std = statistics.pstdev(scores)
    if std <= 1e-12:
        return [1.0] * len(scores)
    lo, hi = mean - 3 * std, mean + 3 * std
    return [(s - lo) / (hi - lo) for s in scores]


def _rank_scores(scores: Sequence[float]) -> list[float]:
    return [1.0 / (RRF_K + rank) for rank in range(1, len(scores) + 1)]


_NORMALISERS: dict[str, Callable[[Sequence[float]], list[float]]] = {
    "relative_score": _minmax,
    "dbsf": _dbsf,
    "rrf": _rank_scores,
}
#: Methods whose normalised scores are clipped to [0, 1] for the fused score.
_CLIPPED = frozenset({"dbsf"})


def fuse(
    dense: Sequence[Ranked[C]],
    sparse: Sequence[Ranked[C]],
    *,
    dense_weight: float,
    sparse_weight: float,
    method: str = "relative_score",
) -> list[Fused[C]]:
    """Combine two rankings (each sorted best first) into one, best first.

    Equal fused scores are ordered by the unclipped combination (``dbsf``), then by chunk id so
    the order is deterministic.
    """
    normalise = _NORMALISERS[method]
    clip = method in _CLIPPED
    total = dense_weight + sparse_weight
    if total <= 0:
        return []
    combined: dict[str, float] = {}
    unclipped: dict[str, float] = {}
    chunks: dict[str, C] = {}
    raw: dict[str, list[float | None]] = {}
    for leg, (hits, weight) in enumerate(((dense, dense_weight), (sparse, sparse_weight))):
        if weight <= 0:
            continue
        for hit, norm in zip(hits, normalise([h.score for h in hits]), strict=True):
            cid = hit.chunk.id
            chunks.setdefault(cid, hit.chunk)
            combined[cid] = combined.get(cid, 0.0) + weight * (min(1.0, max(0.0, norm)) if clip else norm)
            unclipped[cid] = unclipped.get(cid, 0.0) + weight * norm
            raw.setdefault(cid, [None, None])[leg] = hit.score
    scale = total * (1.0 / (RRF_K + 1)) if method == "rrf" else total
    order = sorted(combined, key=lambda cid: (-combined[cid], -unclipped[cid], cid))
    return [Fused(chunks[cid], combined[cid] / scale, raw[cid][0], raw[cid][1]) for cid in order]
