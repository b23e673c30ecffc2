"""A cross-encoder reranker in onnxruntime: each (query, passage) pair runs through the model.

The model is a directory holding ``model.onnx`` (or ``onnx/model.onnx``, the layout of hub
repositories that ship an ONNX export) and ``tokenizer.json``, or a Hugging Face hub name
resolved to such a directory with ``huggingface_hub.snapshot_download`` (cached; honours
``HF_HOME`` / ``HF_HUB_OFFLINE``).
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
from tokenizers import Encoding

from services.common.models import load_tokenizer, onnx_session
from services.rerank.adapters._runner import LocalModelReranker, check_deadline
from services.rerank.errors import ModelNotFound, RerankError

_HUB_FILES = ["model.onnx", "onnx/model.onnx", "tokenizer.json", "config.json"]
_ONNX_INT = {"tensor(int64)": np.int64, "tensor(int32)": np.int32}


def resolve_model_dir(model: str, *, cache_dir: str | None = None, local_files_only: bool = False) -> Path:
    """A local directory as is; anything else is taken for a hub name and downloaded (or found
    in the hub cache)."""
    path = Path(os.path.expanduser(model))
    if path.is_dir():
        return path
    if path.exists():
        raise ModelNotFound(f"{model} is a file; expected a directory with model.onnx and tokenizer.json")
    from huggingface_hub import snapshot_download

    try:
        return Path(
            snapshot_download(
                repo_id=model,
                allow_patterns=_HUB_FILES,
                cache_dir=cache_dir,
                local_files_only=local_files_only,
            )
        )
    except Exception as exc:  # the hub raises many types (offline, 401, 404, bad repo id)
        raise ModelNotFound(
            f"cannot resolve {model!r} as a directory or a Hugging Face hub model: {exc}"
        ) from exc


def model_files(base: Path) -> tuple[Path, Path]:
    """(model.onnx, tokenizer.json) inside ``base``."""
    tokenizer = base / "tokenizer.json"
    for candidate in (base / "model.onnx", base / "onnx" / "model.onnx"):
        if candidate.is_file() and tokenizer.is_file():
            return candidate, tokenizer
    raise ModelNotFound(f"{base} lacks model.onnx (or onnx/model.onnx) and tokenizer.json")


def relevance(logits: npt.NDArray[np.floating]) -> npt.NDArray[np.float32]:
    """One relevance logit per row: a single column as is; two columns (negative, positive) as
    the positive-class log-odds ``l1 - l0``, whose sigmoid is the softmax probability of the
    positive class."""
    out = np.asarray(logits, dtype=np.float32)
    if out.ndim == 1:
        return out
    if out.ndim == 2 and out.shape[1] == 1:
        return out[:, 0]
    if out.ndim == 2 and out.shape[1] == 2:
        return out[:, 1] - out[:, 0]
    raise RerankError(f"cross-encoder output has shape {out.shape}; expected (n,), (n, 1) or (n, 2)")


def sigmoid(x: float) -> float:
    """The logistic function, without overflow for large |x|."""
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


class OnnxCrossEncoderReranker(LocalModelReranker):
    """Cross-encoder over (query, passage) pairs; implements ``ports.Reranker``."""

    def __init__(
        self,
        model_path: Path,
        tokenizer_path: Path,
        *,
        name: str,
        max_tokens: int = 512,
        batch_size: int = 32,
        sigmoid: bool = False,
        threads: int = 0,
    ) -> None:
        self._session = onnx_session(model_path, threads)
        self._inputs = {i.name: _ONNX_INT.get(i.type, np.int64) for i in self._session.get_inputs()}
        missing = {"input_ids", "attention_mask"} - set(self._inputs)
        if missing:
            raise ModelNotFound(f"{model_path} lacks the inputs {sorted(missing)}")
        self._output = self._session.get_outputs()[0].name
        # Truncation is longest_first (the transformers default for pairs): it trims the longer
        # of query/passage first, so a long query cannot make the pair fail.
        self._tokenizer = load_tokenizer(tokenizer_path, max_tokens)
        self._name = name
        self.max_tokens = max_tokens
        self._batch_size = batch_size
        self._sigmoid = sigmoid
        self._lock = threading.Lock()
        super().__init__("cross-encoder")

    @classmethod
    def load(
        cls,
        model: str,
        *,
        max_tokens: int = 512,
        batch_size: int = 32,
        sigmoid: bool = False,
        threads: int = 0,
        cache_dir: str | None = None,
        local_files_only: bool = False,
    ) -> OnnxCrossEncoderReranker:
        """From a directory or a hub name (see ``resolve_model_dir``)."""
        base = resolve_model_dir(model, cache_dir=cache_dir, local_files_only=local_files_only)
        onnx_path, tokenizer_path = model_files(base)
        name = base.name if Path(os.path.expanduser(model)).is_dir() else model
        return cls(
            onnx_path, tokenizer_path, name=name, max_tokens=max_tokens,
            batch_size=batch_size, sigmoid=sigmoid, threads=threads,
        )

    @property
    def model_name(self) -> str:
        return f"cross-encoder:{self._name}"

    def encode(self, query: str, passages: Sequence[str]) -> list[Encoding]:
        """The tokenizer's pair encodings of (query, passage), truncated to ``max_tokens``."""
        return list(self._tokenizer.encode_batch([(query, p) for p in passages]))

    def _run(self, encodings: Sequence[Encoding]) -> npt.NDArray[np.float32]:
        width = max(len(e.ids) for e in encodings)
        ids = np.zeros((len(encodings), width), dtype=np.int64)
        mask = np.zeros_like(ids)
        types = np.zeros_like(ids)
        for row, enc in enumerate(encodings):
            n = len(enc.ids)
            ids[row, :n] = enc.ids
            mask[row, :n] = 1
            types[row, :n] = enc.type_ids
        given = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        feeds = {name: given[name].astype(dtype, copy=False) for name, dtype in self._inputs.items() if name in given}
        with self._lock:
            (logits,) = self._session.run([self._output], feeds)
        return relevance(np.asarray(logits))

    def _score(self, query: str, passages: Sequence[str], deadline: float | None) -> list[float]:
        encodings = self.encode(query, passages)
        order = sorted(range(len(passages)), key=lambda i: len(encodings[i].ids))
        scores = np.zeros(len(passages), dtype=np.float64)
        for start in range(0, len(order), self._batch_size):
            check_deadline(deadline)
            idx = order[start : start + self._batch_size]
            scores[idx] = self._run([encodings[i] for i in idx])
        if self._sigmoid:
            return [sigmoid(s) for s in scores.tolist()]
        return [float(s) for s in scores.tolist()]

    def _probe(self) -> bool:
        scores = self._score("ready", ["ready"], None)
        return len(scores) == 1 and math.isfinite(scores[0])
