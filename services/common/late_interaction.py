"""Late interaction (ColBERT-style MaxSim) over the packaged encoder's token vectors, shared by
the dense service (which stores each chunk's compressed token vectors when it embeds the chunk
and scores them at query time) and the rerank service (which computes them per request).

score(q, p) = mean over query tokens of the max cosine to any passage token. The mean and the
sum rank a query's passages identically (they differ by the constant query length); the mean is
kept because it stays in [-1, 1] whatever the query length, so scores are comparable across
queries (thresholds, fusion, logs).

What a chunk keeps (``compress``): its content tokens minus punctuation and English stop words,
pooled into at most ``max_tokens`` centroids by a few rounds of spherical k-means (tokens of
the same word or of near-synonyms merge; a chunk with fewer tokens keeps them all), handed to
the vector engine as float16 unit rows (which stores them as 8-bit codes). The choice and its
cost are measured in docs/benchmarks.md ("Stored token vectors").
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from services.common.models import TokenStates, unit_rows

#: English function words that carry no topical evidence of their own; dropped from passages
#: before pooling (a query keeps all its tokens: MaxSim averages over them).
STOP_WORDS = frozenset(
    "a about above after again all also am an and any are as at be been before being below between both but by "
    "can could did do does doing down during each few for from further had has have having he her here hers "
    "him his how i if in into is it its itself just me more most my no nor not now of off on once only or "
    "other our ours out over own same she should so some such than that the their theirs them then there "
    "these they this those through to too under until up very was we were what when where which while who "
    "whom why will with would you your yours".split()
)
#: Spherical k-means rounds: pooling converges within a few on a chunk's ~100-200 tokens.
_KMEANS_ROUNDS = 6


def maxsim(query: npt.NDArray[np.floating], passage: npt.NDArray[np.floating]) -> float:
    """Mean over query tokens of the max cosine to any passage token (rows are unit vectors)."""
    if query.shape[0] == 0 or passage.shape[0] == 0:
        return 0.0
    sims = np.asarray(query, np.float32) @ np.asarray(passage, np.float32).T
    return float(sims.max(axis=1).mean())


def _is_content(token: str) -> bool:
    word = token[2:] if token.startswith("##") else token
    return any(ch.isalnum() for ch in word) and token.lower() not in STOP_WORDS


def compress(states: TokenStates, max_tokens: int) -> npt.NDArray[np.float16]:
    """At most ``max_tokens`` float16 unit rows standing for the passage's tokens (see the module
    docstring). A passage with no content token keeps its first token; an empty one keeps none."""
    rows = states.unit()
    if rows.shape[0] == 0:
        return rows.astype(np.float16)
    keep = [i for i, t in enumerate(states.tokens) if _is_content(t)] or [0]
    rows = rows[keep]
    if rows.shape[0] > max_tokens:
        rows = _spherical_kmeans(rows, max_tokens)
    return rows.astype(np.float16)


def _spherical_kmeans(rows: npt.NDArray[np.float32], k: int) -> npt.NDArray[np.float32]:
    """``k`` unit centroids of ``rows`` (cosine assignment), seeded evenly along the text so the
    result is deterministic and covers the whole passage."""
    centroids = rows[np.linspace(0, rows.shape[0] - 1, k).round().astype(int)].copy()
    for _ in range(_KMEANS_ROUNDS):
        assign = np.argmax(rows @ centroids.T, axis=1)
        sums = np.zeros_like(centroids)
        np.add.at(sums, assign, rows)
        used = np.bincount(assign, minlength=k) > 0
        centroids[used] = sums[used]  # an empty cluster keeps its seed
        centroids = unit_rows(centroids)
    return centroids


def query_tokens(states: TokenStates) -> npt.NDArray[np.float32]:
    """The query side: every content token as a unit row (MaxSim averages over them)."""
    return states.unit()
