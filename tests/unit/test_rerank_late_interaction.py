"""LateInteractionReranker over the real packaged MiniLM."""

from __future__ import annotations

from collections.abc import AsyncIterator

import numpy as np
import pytest

from services.common.late_interaction import maxsim
from services.rerank.adapters.late_interaction import LateInteractionReranker, TokenVectorCache, text_key

QUERY = "how do cats hunt mice"
RELEVANT = "A cat stalks a mouse silently and pounces to catch its prey."
IRRELEVANT = [
    "The central bank raised interest rates by a quarter point on Tuesday.",
    "Compilers translate source code into machine instructions.",
    "The recipe needs two cups of flour and a pinch of salt.",
]


@pytest.fixture
async def reranker() -> AsyncIterator[LateInteractionReranker]:
    rr = LateInteractionReranker.load(batch_size=2)
    yield rr
    await rr.close()


async def test_relevant_passage_scores_highest(reranker: LateInteractionReranker) -> None:
    passages = [IRRELEVANT[0], RELEVANT, *IRRELEVANT[1:]]
    scores = await reranker.score(QUERY, passages)
    assert len(scores) == len(passages)
    assert int(np.argmax(scores)) == 1
    assert all(-1.0 <= s <= 1.0 for s in scores)
    assert reranker.model_name == "late-interaction:all-MiniLM-L6-v2-onnx-int8"


async def test_identical_text_scores_near_one(reranker: LateInteractionReranker) -> None:
    (score,) = await reranker.score(RELEVANT, [RELEVANT])
    assert score == pytest.approx(1.0, abs=1e-2)  # float16 cache rounding only


async def test_batching_does_not_change_scores() -> None:
    passages = [RELEVANT, *IRRELEVANT, "mice", "a much longer passage " * 20]
    small = LateInteractionReranker.load(batch_size=1)
    large = LateInteractionReranker.load(batch_size=64)
    try:
        a = await small.score(QUERY, passages)
        b = await large.score(QUERY, passages)
    finally:
        await small.close()
        await large.close()
    np.testing.assert_allclose(a, b, atol=2e-3)


async def test_token_budget_bounds_each_model_run_without_changing_scores() -> None:
    passages = [RELEVANT, *IRRELEVANT, "mice", "a much longer passage " * 20, "short"]
    tight = LateInteractionReranker.load(batch_tokens=64, cache_size=0)
    loose = LateInteractionReranker.load(batch_tokens=1_000_000, cache_size=0)
    try:
        batches = [[passages[i] for i in idx] for idx, _ in tight._encoder._batches(passages)]
        lengths = {p: len(e.ids) for p, e in zip(passages, tight._encoder.encode(passages), strict=True)}
        assert sorted(p for b in batches for p in b) == sorted(passages)  # each text once
        for batch in batches:
            widest = max(lengths[p] for p in batch)
            assert len(batch) == 1 or len(batch) * widest <= 64  # a lone long text still runs
        order = [lengths[p] for b in batches for p in b]
        assert order == sorted(order)  # shortest first, so padding stays small
        assert len(loose._encoder._batches(passages)) == 1
        np.testing.assert_allclose(await tight.score(QUERY, passages), await loose.score(QUERY, passages), atol=2e-3)
    finally:
        await tight.close()
        await loose.close()


async def test_cache_makes_repeated_candidates_free(reranker: LateInteractionReranker) -> None:
    passages = [RELEVANT, *IRRELEVANT, RELEVANT]  # a duplicate inside one request is computed once
    first = await reranker.score(QUERY, passages)
    assert len(reranker.cache) == 1 + len(IRRELEVANT) + 1  # passages + the query
    hits, misses = reranker.cache.hits, reranker.cache.misses
    second = await reranker.score(QUERY, list(reversed(passages)))
    assert reranker.cache.misses == misses  # nothing recomputed
    assert reranker.cache.hits - hits == 1 + len(IRRELEVANT) + 1  # one lookup per distinct text
    assert second == list(reversed(first))
    assert first[0] == first[-1]


async def test_long_passages_are_truncated_to_max_tokens() -> None:
    rr = LateInteractionReranker.load(max_tokens=16)
    try:
        long_text = " ".join(f"word{i}" for i in range(200))
        await rr.score("query", [long_text])
        vectors = rr.cache.get(text_key(long_text))
        assert vectors is not None
        assert vectors.shape[0] <= 16 - 2  # [CLS] and [SEP] take two of the 16
        # a word beyond the cut cannot help the passage
        tail = await rr.score("giraffe", ["the cat sat on the mat " * 20 + "giraffe"])
        head = await rr.score("giraffe", ["giraffe " + "the cat sat on the mat " * 20])
        assert head[0] > tail[0]
    finally:
        await rr.close()


async def test_empty_inputs(reranker: LateInteractionReranker) -> None:
    assert await reranker.score(QUERY, []) == []
    (alone,) = await reranker.score(QUERY, [RELEVANT])
    assert await reranker.score(QUERY, ["", RELEVANT]) == [0.0, pytest.approx(alone)]


async def test_expired_timeout_raises(reranker: LateInteractionReranker) -> None:
    with pytest.raises(TimeoutError):
        await reranker.score(QUERY, [RELEVANT], timeout=0)
    with pytest.raises(TimeoutError):
        # 200 batches of one cannot finish in a millisecond; the worker stops at a batch boundary
        await reranker.score(QUERY, [f"passage number {i} about cats" for i in range(200)], timeout=0.001)
    assert (await reranker.score(QUERY, [RELEVANT], timeout=30))[0] > 0


async def test_ready(reranker: LateInteractionReranker) -> None:
    assert await reranker.ready()


def test_maxsim_is_mean_of_best_matches() -> None:
    q = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    p = np.array([[1.0, 0.0], [0.6, 0.8]], dtype=np.float32)
    assert maxsim(q, p) == pytest.approx((1.0 + 0.8) / 2)
    assert maxsim(q, np.zeros((0, 2), np.float32)) == 0.0


def test_cache_evicts_least_recently_used_by_count_and_bytes() -> None:
    cache = TokenVectorCache(max_entries=2, max_bytes=10_000)
    a, b, c = (np.full((4, 8), v, np.float16) for v in (1, 2, 3))  # 64 bytes each
    cache.put(b"a", a)
    cache.put(b"b", b)
    assert cache.get(b"a") is a  # now a is most recent
    cache.put(b"c", c)
    assert cache.get(b"b") is None and cache.get(b"a") is a and cache.get(b"c") is c
    small = TokenVectorCache(max_entries=100, max_bytes=150)
    for key, value in ((b"a", a), (b"b", b), (b"c", c)):
        small.put(key, value)
    assert len(small) == 2 and small.nbytes == 128 and small.get(b"a") is None
    small.put(b"big", np.zeros((100, 8), np.float16))  # larger than the whole budget: not kept
    assert small.get(b"big") is None and len(small) == 2
