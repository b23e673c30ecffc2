"""The default Embedder: a BERT-style ONNX encoder (the packaged all-MiniLM-L6-v2 int8)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from services.common.models import (
    DEFAULT_BATCH_TOKENS,
    DEFAULT_MAX_TOKENS,
    EncoderModel,
    TokenStates,
    load_encoder,
)


class OnnxEmbedder:
    """Mean-pooled, L2-normalised sentence vectors from ``services.common.models``.

    MiniLM embeds queries and passages the same way, so ``is_query`` changes nothing here.
    Thread-safe: the encoder serialises its onnxruntime calls.
    """

    def __init__(self, encoder: EncoderModel) -> None:
        if not encoder.dim:
            # ``pooled`` sizes its output by ``encoder.dim``, so a model whose hidden size is
            # symbolic in the ONNX graph cannot be used (nor probed) through it.
            raise ValueError(f"model {encoder.name!r} does not declare its hidden size")
        self._encoder = encoder

    @classmethod
    def load(
        cls,
        model_dir: str | None = None,
        *,
        batch_size: int = 32,
        batch_tokens: int = DEFAULT_BATCH_TOKENS,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        threads: int = 0,
    ) -> OnnxEmbedder:
        """The packaged model, or ``model_dir/{model.onnx,tokenizer.json}`` when given."""
        return cls(load_encoder(model_dir, max_tokens=max_tokens, batch_size=batch_size, batch_tokens=batch_tokens,
                                threads=threads))

    @property
    def model_name(self) -> str:
        return self._encoder.name

    @property
    def dim(self) -> int:
        return self._encoder.dim

    def embed(self, texts: Sequence[str], *, is_query: bool = False) -> npt.NDArray[np.float32]:
        """One L2-normalised float32 row per text, in order (batched by the encoder; none for none)."""
        return self._encoder.pooled(texts)

    def embed_with_tokens(
        self, texts: Sequence[str], *, is_query: bool = False
    ) -> tuple[npt.NDArray[np.float32], list[TokenStates]]:
        """``embed`` and each text's content-token states, from the same model runs."""
        return self._encoder.pooled_and_tokens(texts)
