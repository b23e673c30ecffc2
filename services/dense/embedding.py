"""The default Embedder: a BERT-style ONNX encoder (the packaged all-MiniLM-L6-v2 int8)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from services.common.models import DEFAULT_MAX_TOKENS, EncoderModel, load_encoder


class OnnxEmbedder:
    """Mean-pooled, L2-normalised sentence vectors from ``services.common.models``.

    MiniLM embeds queries and passages the same way, so ``is_query`` changes nothing here.
    Thread-safe: the encoder serialises its onnxruntime calls.
    """

    def __init__(self, encoder: EncoderModel) -> None:
        self._encoder = encoder
        dim = encoder.dim or int(encoder.pooled(["dimension probe"]).shape[1])
        self._dim = dim

    @classmethod
    def load(
        cls,
        model_dir: str | None = None,
        *,
        batch_size: int = 32,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        threads: int = 0,
    ) -> OnnxEmbedder:
        """The packaged model, or ``model_dir/{model.onnx,tokenizer.json}`` when given."""
        return cls(load_encoder(model_dir, max_tokens=max_tokens, batch_size=batch_size, threads=threads))

    @property
    def model_name(self) -> str:
        return self._encoder.name

    @property
    def dim(self) -> int:
        return self._dim

    def embed(self, texts: Sequence[str], *, is_query: bool = False) -> npt.NDArray[np.float32]:
        """One L2-normalised row per text, in order (batched by the encoder)."""
        if not texts:
            return np.zeros((0, self._dim), dtype=np.float32)
        return np.ascontiguousarray(self._encoder.pooled(list(texts)), dtype=np.float32)
