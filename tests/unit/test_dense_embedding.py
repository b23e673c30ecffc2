"""OnnxEmbedder over the packaged all-MiniLM-L6-v2 int8."""

from __future__ import annotations

import numpy as np
import pytest

from services.common.models import load_encoder, onnx_session, packaged_paths, token_budget_batches
from services.dense.embedding import OnnxEmbedder

TEXTS = [
    "The cat sat on the mat.",
    "A kitten is resting on a rug.",
    "Quarterly revenue grew by twelve percent, driven by cloud subscriptions and strong renewals.",
    "Stock markets fell sharply today.",
    "x",
]


@pytest.fixture(scope="module")
def embedder() -> OnnxEmbedder:
    return OnnxEmbedder.load()


def test_model_and_dimension(embedder: OnnxEmbedder) -> None:
    assert embedder.dim == 384
    assert embedder.model_name == "all-MiniLM-L6-v2-onnx-int8"


def test_rows_are_unit_length_float32(embedder: OnnxEmbedder) -> None:
    vectors = embedder.embed(TEXTS)
    assert vectors.shape == (len(TEXTS), 384)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_empty_input_gives_no_rows(embedder: OnnxEmbedder) -> None:
    empty = embedder.embed([])
    assert empty.shape == (0, 384) and empty.dtype == np.float32


def test_a_model_without_a_declared_hidden_size_is_refused() -> None:
    encoder = load_encoder()
    encoder.dim = 0  # as for an ONNX export whose last output axis is symbolic
    with pytest.raises(ValueError, match="hidden size"):
        OnnxEmbedder(encoder)


def test_batching_preserves_order() -> None:
    small_batches = OnnxEmbedder(load_encoder(batch_size=2))
    one_by_one = np.vstack([small_batches.embed([t]) for t in TEXTS])
    batched = small_batches.embed(TEXTS)
    # Rows come back in input order even though batches are formed by length.
    np.testing.assert_allclose(batched, one_by_one, atol=1e-4)
    assert np.argmax(batched @ one_by_one[2]) == 2


def test_similar_texts_are_closer(embedder: OnnxEmbedder) -> None:
    cat, kitten, revenue, stocks, _ = embedder.embed(TEXTS)
    assert cat @ kitten > cat @ revenue
    assert cat @ kitten > cat @ stocks
    assert revenue @ stocks > revenue @ kitten


def test_query_and_passage_embed_alike(embedder: OnnxEmbedder) -> None:
    np.testing.assert_allclose(embedder.embed(TEXTS[:1], is_query=True), embedder.embed(TEXTS[:1]), atol=1e-6)


@pytest.mark.parametrize(("spin", "expected"), [(False, "0"), (True, "1")])
def test_model_sessions_do_not_spin_unless_asked(spin: bool, expected: str) -> None:
    model, _ = packaged_paths()
    options = onnx_session(model, spin=spin).get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == expected


def test_token_budget_batches_sort_by_length_and_bound_rows_and_padded_tokens() -> None:
    lengths = [30, 5, 200, 10, 12, 300]
    runs = token_budget_batches(lengths, batch_size=3, batch_tokens=64)
    assert sorted(i for run in runs for i in run) == list(range(len(lengths)))
    ordered = [lengths[i] for run in runs for i in run]
    assert ordered == sorted(lengths)
    for run in runs:
        longest = max(lengths[i] for i in run)
        assert len(run) <= 3
        assert len(run) == 1 or len(run) * longest <= 64  # a text over the budget runs alone
    assert runs == [[1, 3, 4], [0], [2], [5]]


def test_a_token_budget_changes_the_runs_not_the_vectors() -> None:
    roomy, tight = load_encoder(batch_tokens=100_000), load_encoder(batch_tokens=16)
    assert len(tight._batches(TEXTS)) > len(roomy._batches(TEXTS)) == 1
    np.testing.assert_allclose(tight.pooled(TEXTS), roomy.pooled(TEXTS), atol=1e-5)


def test_before_run_is_called_before_every_model_run_and_can_stop_the_work() -> None:
    encoder = load_encoder(batch_tokens=16)
    calls: list[int] = []
    encoder.token_vectors(TEXTS, before_run=lambda: calls.append(1))
    assert len(calls) == len(encoder._batches(TEXTS)) > 1

    def expired() -> None:
        raise TimeoutError("deadline")

    with pytest.raises(TimeoutError):
        encoder.token_vectors(TEXTS, before_run=expired)
