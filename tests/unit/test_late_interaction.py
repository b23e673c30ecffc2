"""What a chunk keeps for late interaction (``compress``) and how it is scored, on the real
packaged encoder's states."""

from __future__ import annotations

import numpy as np
import pytest

from services.common.late_interaction import STOP_WORDS, compress, maxsim, query_tokens
from services.common.models import TokenStates, load_encoder

SHORT = "The cat sat on the mat, and it purred."
LONG = " ".join(f"Glaciers carve valley number {i} while moraines of debris pile up downstream." for i in range(12))


@pytest.fixture(scope="module")
def states() -> dict[str, TokenStates]:
    encoder = load_encoder()
    _, found = encoder.pooled_and_tokens([SHORT, LONG, "", "the of and ."])
    return dict(zip(["short", "long", "empty", "stop"], found, strict=True))


def test_states_come_from_the_same_run_as_the_sentence_vector() -> None:
    encoder = load_encoder()
    pooled, states = encoder.pooled_and_tokens([SHORT, LONG])
    np.testing.assert_allclose(pooled, encoder.pooled([SHORT, LONG]), atol=1e-6)
    assert states[0].tokens == tuple(encoder.encode([SHORT])[0].tokens[1:-1])  # [CLS]/[SEP] dropped
    for got, want in zip(encoder.token_vectors([SHORT, LONG]), states, strict=True):
        np.testing.assert_allclose(got, want.unit(), atol=1e-6)


def test_a_short_passage_keeps_its_content_tokens(states: dict[str, TokenStates]) -> None:
    kept = compress(states["short"], 32)
    content = [t for t in states["short"].tokens if t.strip("#").isalnum() and t.lower() not in STOP_WORDS]
    assert content[:3] == ["cat", "sat", "mat"] and "".join(content[3:]).replace("#", "") == "purred"
    assert kept.dtype == np.float16 and kept.shape == (len(content), 384)
    rows = states["short"].unit()
    expected = rows[[states["short"].tokens.index(t) for t in content]]
    np.testing.assert_allclose(kept.astype(np.float32), expected, atol=2e-3)


def test_a_long_passage_is_pooled_to_the_cap(states: dict[str, TokenStates]) -> None:
    kept = compress(states["long"], 16)
    assert kept.shape == (16, 384)
    np.testing.assert_allclose(np.linalg.norm(kept.astype(np.float32), axis=1), 1.0, atol=2e-3)
    np.testing.assert_array_equal(kept, compress(states["long"], 16))  # deterministic
    # Pooling loses little: every kept row stands for tokens it is close to, and a query about
    # the passage scores about as it does against all of its content tokens.
    query = query_tokens(load_encoder().pooled_and_tokens(["glacier moraines"])[1][0])
    full = compress(states["long"], 10_000)
    assert full.shape[0] > 16
    assert maxsim(query, kept) == pytest.approx(maxsim(query, full), abs=0.05)


def test_edge_cases_keep_something_scorable_or_nothing(states: dict[str, TokenStates]) -> None:
    assert compress(states["empty"], 32).shape[0] == 0
    only_stop = compress(states["stop"], 32)
    assert only_stop.shape == (1, 384)  # nothing topical: its first token stands for it
    assert maxsim(np.ones((1, 384), np.float32), np.zeros((0, 384), np.float16)) == 0.0


def test_maxsim_is_the_mean_of_each_query_tokens_best_match() -> None:
    q = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
    p = np.array([[1.0, 0.0], [0.6, 0.8]], np.float16)
    assert maxsim(q, p) == pytest.approx((1.0 + 0.8) / 2, abs=1e-3)
