"""Late-interaction reranking (ColBERT-style MaxSim, ``services.common.late_interaction``) over
token vectors the packaged MiniLM computes per request: the reranker of windows whose chunks
were indexed without stored token vectors, and of deployments that turn those off.

Passage token vectors are cached (LRU keyed by a hash of the text, float16 to halve memory), so
candidates seen again in later requests cost only the matrix product.

Cost: the encoder dominates (onnxruntime runs the transformer over every uncached passage).
The encoder runs texts by token count, shortest first, and closes a run once its padded size
(rows x longest row) would pass ``batch_tokens`` (``token_budget_batches``): on 2 cores, 20 passages of up to 256 tokens
took about 1.4 s of CPU in one 32-row batch and 0.9 s in batches of at most 512 padded tokens
(`quarry bench rerank`); attention cost grows with the square of the padded width.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from services.common.late_interaction import maxsim
from services.common.models import DEFAULT_MAX_TOKENS, EncoderModel, load_encoder
from services.rerank.adapters._runner import LocalModelReranker, check_deadline

Vectors = npt.NDArray[np.float16]


def text_key(text: str) -> bytes:
    """The cache key of a text: a 128-bit BLAKE2b digest of its UTF-8 bytes."""
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()


class TokenVectorCache:
    """A thread-safe LRU of token-vector matrices bounded by entry count and by bytes."""

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._items: OrderedDict[bytes, Vectors] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._items)

    @property
    def nbytes(self) -> int:
        return self._bytes

    def get(self, key: bytes) -> Vectors | None:
        """The cached matrix (now most recently used), or None."""
        with self._lock:
            found = self._items.get(key)
            if found is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return found

    def put(self, key: bytes, value: Vectors) -> None:
        """Insert ``value``, evicting least recently used entries past either bound."""
        if self.max_entries == 0 or value.nbytes > self.max_bytes:
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old.nbytes
            self._items[key] = value
            self._bytes += value.nbytes
            while len(self._items) > self.max_entries or self._bytes > self.max_bytes:
                _, evicted = self._items.popitem(last=False)
                self._bytes -= evicted.nbytes


class LateInteractionReranker(LocalModelReranker):
    """MaxSim reranker over an encoder's token vectors; implements ``ports.Reranker``."""

    def __init__(
        self,
        encoder: EncoderModel,
        *,
        cache_size: int = 4096,
        cache_mb: int = 256,
    ) -> None:
        super().__init__("late-interaction")
        self._encoder = encoder
        self.cache = TokenVectorCache(cache_size, cache_mb * 1024 * 1024)

    @classmethod
    def load(
        cls,
        model_dir: str | None = None,
        *,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        batch_size: int = 32,
        threads: int = 0,
        cache_size: int = 4096,
        cache_mb: int = 256,
        batch_tokens: int = 512,
    ) -> LateInteractionReranker:
        """The packaged MiniLM (or ``model_dir``), passages truncated to ``max_tokens`` tokens and
        encoded in runs of at most ``batch_tokens`` padded tokens."""
        encoder = load_encoder(model_dir, max_tokens=max_tokens, batch_size=batch_size, batch_tokens=batch_tokens,
                               threads=threads)
        return cls(encoder, cache_size=cache_size, cache_mb=cache_mb)

    @property
    def model_name(self) -> str:
        return f"late-interaction:{self._encoder.name}"

    def _vectors(self, texts: Sequence[str], deadline: float | None) -> list[Vectors]:
        """Token vectors of each text, from the cache or computed in batches of similar length."""
        keys = [text_key(t) for t in texts]
        found: dict[bytes, Vectors] = {}
        missing: dict[bytes, str] = {}
        for key, text in zip(keys, texts, strict=True):
            if key in found or key in missing:
                continue
            cached = self.cache.get(key)
            if cached is None:
                missing[key] = text
            else:
                found[key] = cached
        # The encoder runs them by length in token-budget runs; the deadline is checked before each.
        computed = self._encoder.token_vectors(list(missing.values()), before_run=lambda: check_deadline(deadline))
        for key, vecs in zip(missing, computed, strict=True):
            half = vecs.astype(np.float16)
            self.cache.put(key, half)
            found[key] = half
        return [found[k] for k in keys]

    def _score(self, query: str, passages: Sequence[str], deadline: float | None) -> list[float]:
        query_vecs, *passage_vecs = self._vectors([query, *passages], deadline)
        check_deadline(deadline)
        query32 = query_vecs.astype(np.float32)  # once, not once per passage
        return [maxsim(query32, p) for p in passage_vecs]

    def _probe(self) -> bool:
        vectors = self._encoder.token_vectors(["ready"])
        return len(vectors) == 1 and vectors[0].shape[0] > 0
