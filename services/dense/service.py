"""The dense service's use cases, in domain types only."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from services.common.domain import Chunk, FilterNode, Hit, claim_chunks
from services.common.errors import InvalidArgument
from services.dense.ports import Embedder, VectorIndex


@dataclass(frozen=True, slots=True)
class SearchResult:
    hits: list[Hit]
    embed_seconds: float
    search_seconds: float


class DenseService:
    """Embeds with one model and reads/writes one vector index."""

    def __init__(
        self,
        embedder: Embedder,
        index: VectorIndex,
        *,
        upsert_batch_size: int = 256,
        max_top_k: int = 10_000,
    ) -> None:
        self.embedder = embedder
        self.index = index
        self._batch = max(1, upsert_batch_size)
        self._max_top_k = max_top_k

    async def embed(self, texts: Sequence[str], *, is_query: bool = False) -> npt.NDArray[np.float32]:
        """Vectors for ``texts``, computed off the event loop."""
        return await asyncio.to_thread(self.embedder.embed, texts, is_query=is_query)

    async def upsert(self, index_id: str, chunks: Sequence[Chunk]) -> int:
        """Embed the chunks' content in batches and write each batch; returns how many were written."""
        prepared = claim_chunks(index_id, chunks)
        for start in range(0, len(prepared), self._batch):
            batch = prepared[start : start + self._batch]
            vectors = await self.embed([c.content for c in batch])
            await self.index.upsert(index_id, batch, vectors)
        return len(prepared)

    async def search(self, index_id: str, query: str, top_k: int, filter: FilterNode | None) -> SearchResult:
        """Embed the query, then the top_k nearest chunks matching the filter."""
        _require(index_id, "index_id")
        if top_k < 0 or top_k > self._max_top_k:
            raise InvalidArgument(f"top_k must be between 0 and {self._max_top_k}")
        if top_k == 0:
            return SearchResult([], 0.0, 0.0)
        started = time.perf_counter()
        vector = (await self.embed([query], is_query=True))[0]
        embedded = time.perf_counter()
        hits = await self.index.search(index_id, vector, top_k, filter)
        return SearchResult(hits, embedded - started, time.perf_counter() - embedded)

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
