"""The dense service's use cases, in domain types only."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from services.common.domain import Chunk, FilterNode, Hit, claim_chunks
from services.common.errors import InvalidArgument
from services.common.late_interaction import compress, query_tokens
from services.dense.ports import Embedder, VectorIndex


@dataclass(frozen=True, slots=True)
class SearchResult:
    hits: list[Hit]
    embed_seconds: float
    search_seconds: float


@dataclass(frozen=True, slots=True)
class LateScores:
    """Late-interaction scores of the named chunks, in order; ``scores`` is None when the index
    does not hold stored token vectors for all of them."""

    scores: list[float] | None
    embed_seconds: float


class QueryTokenCache:
    """The last queries' token vectors (LRU): a search computes them with the query's sentence
    vector, and the late-interaction scoring of the same query that follows reuses them."""

    def __init__(self, max_entries: int = 1024) -> None:
        self._items: OrderedDict[str, npt.NDArray[np.float32]] = OrderedDict()
        self._max = max_entries
        self._lock = threading.Lock()

    def get(self, query: str) -> npt.NDArray[np.float32] | None:
        with self._lock:
            found = self._items.get(query)
            if found is not None:
                self._items.move_to_end(query)
            return found

    def put(self, query: str, tokens: npt.NDArray[np.float32]) -> None:
        if self._max <= 0:
            return
        with self._lock:
            self._items[query] = tokens
            self._items.move_to_end(query)
            while len(self._items) > self._max:
                self._items.popitem(last=False)


class DenseService:
    """Embeds with one model and reads/writes one vector index.

    ``token_vectors`` > 0: every upserted chunk also gets at most that many late-interaction
    token vectors, taken from the same model run as its sentence vector and stored with it
    (``services.common.late_interaction.compress``); ``late_scores`` scores them against a
    query's token vectors. 0 turns them off (the rerank service then computes them per query).
    """

    def __init__(
        self,
        embedder: Embedder,
        index: VectorIndex,
        *,
        upsert_batch_size: int = 256,
        max_top_k: int = 10_000,
        token_vectors: int = 0,
        query_cache: int = 1024,
    ) -> None:
        self.embedder = embedder
        self.index = index
        self._batch = max(1, upsert_batch_size)
        self._max_top_k = max_top_k
        self._token_vectors = token_vectors
        self._queries = QueryTokenCache(query_cache)

    async def embed(self, texts: Sequence[str], *, is_query: bool = False) -> npt.NDArray[np.float32]:
        """Vectors for ``texts``, computed off the event loop."""
        return await asyncio.to_thread(self.embedder.embed, texts, is_query=is_query)

    async def upsert(self, index_id: str, chunks: Sequence[Chunk]) -> int:
        """Embed the chunks' content in batches and write each batch; returns how many were written."""
        prepared = claim_chunks(index_id, chunks)
        for start in range(0, len(prepared), self._batch):
            batch = prepared[start : start + self._batch]
            if self._token_vectors:
                vectors, tokens = await asyncio.to_thread(self._embed_passages, [c.content for c in batch])
                await self.index.upsert(index_id, batch, vectors, tokens)
            else:
                await self.index.upsert(index_id, batch, await self.embed([c.content for c in batch]))
        return len(prepared)

    def _embed_passages(
        self, texts: list[str]
    ) -> tuple[npt.NDArray[np.float32], list[npt.NDArray[np.float16]]]:
        vectors, states = self.embedder.embed_with_tokens(texts)
        return vectors, [compress(s, self._token_vectors) for s in states]

    def _embed_query(self, query: str) -> npt.NDArray[np.float32]:
        """The query's sentence vector; its token vectors are kept for ``late_scores``."""
        if not self._token_vectors:
            return self.embedder.embed([query], is_query=True)[0]
        vectors, (states,) = self.embedder.embed_with_tokens([query], is_query=True)
        self._queries.put(query, query_tokens(states))
        return vectors[0]

    async def search(self, index_id: str, query: str, top_k: int, filter: FilterNode | None) -> SearchResult:
        """Embed the query, then the top_k nearest chunks matching the filter."""
        _require(index_id, "index_id")
        if top_k < 0 or top_k > self._max_top_k:
            raise InvalidArgument(f"top_k must be between 0 and {self._max_top_k}")
        if top_k == 0:
            return SearchResult([], 0.0, 0.0)
        started = time.perf_counter()
        vector = await asyncio.to_thread(self._embed_query, query)
        embedded = time.perf_counter()
        hits = await self.index.search(index_id, vector, top_k, filter)
        return SearchResult(hits, embedded - started, time.perf_counter() - embedded)

    async def late_scores(self, index_id: str, query: str, chunk_ids: Sequence[str]) -> LateScores:
        """Late-interaction scores of ``chunk_ids`` for ``query`` from their stored token vectors
        (the query's from the search that just embedded it, or computed now)."""
        _require(index_id, "index_id")
        if len(chunk_ids) > self._max_top_k:
            raise InvalidArgument(f"at most {self._max_top_k} chunk_ids per call")
        if not self._token_vectors or not chunk_ids:
            return LateScores(None if chunk_ids else [], 0.0)
        started = time.perf_counter()
        tokens = self._queries.get(query)
        if tokens is None:
            _, (states,) = await asyncio.to_thread(self.embedder.embed_with_tokens, [query], is_query=True)
            tokens = query_tokens(states)
            self._queries.put(query, tokens)
        embedded = time.perf_counter() - started
        return LateScores(await self.index.late_scores(index_id, tokens, list(chunk_ids)), embedded)

    async def delete_file(self, index_id: str, file_id: str) -> int:
        """Remove every chunk of one file."""
        _require(index_id, "index_id")
        _require(file_id, "file_id")
        return await self.index.delete_file(index_id, file_id)

    async def drop(self, index_id: str) -> int:
        """Remove a whole index; returns how many chunks it held."""
        _require(index_id, "index_id")
        n = await self.index.count(index_id)
        await self.index.drop(index_id)
        return n

    async def count(self, index_id: str, file_id: str | None = None) -> int:
        """Chunks in the index (or in one file of it)."""
        _require(index_id, "index_id")
        return await self.index.count(index_id, file_id or None)

    async def ready(self) -> bool:
        return await self.index.ready()

    async def close(self) -> None:
        await self.index.close()


def _require(value: str, name: str) -> None:
    if not value:
        raise InvalidArgument(f"{name} is required")
