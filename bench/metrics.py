"""Ranking quality, defined here so the numbers do not depend on an evaluation library.

- ``ndcg_at_k``: DCG@k / IDCG@k with linear gains (the qrels grade) and the log2(rank + 1)
  discount (trec_eval's and BEIR's definition); IDCG sorts every judged relevant document of
  the query by grade. A query with no relevant document is skipped by the caller.
- ``recall_at_k``: relevant documents (grade > 0) in the top k / all relevant documents.

Rankings are of documents: a document split into several chunks counts once, at the rank of
its best chunk (``dedupe``).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence


def dedupe(doc_ids: Iterable[str]) -> list[str]:
    """First occurrence of each document, in order."""
    seen: set[str] = set()
    out = []
    for doc in doc_ids:
        if doc not in seen:
            seen.add(doc)
            out.append(doc)
    return out


def ndcg_at_k(ranking: Sequence[str], qrels: Mapping[str, int], k: int = 10) -> float:
    """nDCG@k of one ranking of document ids against graded judgements."""
    dcg = sum(qrels.get(doc, 0) / math.log2(rank + 2) for rank, doc in enumerate(ranking[:k]))
    ideal = sorted((g for g in qrels.values() if g > 0), reverse=True)[:k]
    idcg = sum(g / math.log2(rank + 2) for rank, g in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def recall_at_k(ranking: Sequence[str], qrels: Mapping[str, int], k: int = 100) -> float:
    """Share of the relevant documents found in the top k."""
    relevant = {doc for doc, g in qrels.items() if g > 0}
    if not relevant:
        return 0.0
    return len(relevant.intersection(ranking[:k])) / len(relevant)


def evaluate(
    runs: Mapping[str, Sequence[str]], qrels: Mapping[str, Mapping[str, int]]
) -> dict[str, float]:
    """Mean nDCG@10 and recall@100 over the judged queries (a query missing from ``runs`` scores 0)."""
    judged = [q for q, rels in qrels.items() if any(g > 0 for g in rels.values())]
    if not judged:
        return {"ndcg@10": 0.0, "recall@100": 0.0, "queries": 0}
    ndcg = [ndcg_at_k(runs.get(q, []), qrels[q], 10) for q in judged]
    recall = [recall_at_k(runs.get(q, []), qrels[q], 100) for q in judged]
    return {"ndcg@10": statistics.fmean(ndcg), "recall@100": statistics.fmean(recall), "queries": len(judged)}


def percentiles(values: Sequence[float], points: Sequence[int] = (50, 90, 99)) -> dict[str, float]:
    """Nearest-rank percentiles (``p50`` ...) of ``values``; empty input gives an empty dict."""
    if not values:
        return {}
    ordered = sorted(values)
    out = {}
    for p in points:
        rank = max(1, math.ceil(p / 100 * len(ordered)))
        out[f"p{p}"] = ordered[rank - 1]
    return out
