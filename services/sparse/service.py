"""The sparse service's use cases, in domain types only."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass

from services.common.domain import Chunk, FilterNode, Hit, claim_chunks
from services.sparse.errors import IndexDamaged, InvalidRequest
from services.sparse.ports import KeywordIndex


@dataclass(frozen=True, slots=True)
class SearchResult:
    hits: list[Hit]
    seconds: float


class SparseService:
    """Validates requests, applies the time budget, and drives one ``KeywordIndex``.

    A write whose budget runs out reports ``TimeoutError`` while the engine finishes it in the
    background; writes are idempotent by chunk id, so the caller's retry is safe.
    """

    def __init__(self, index: KeywordIndex, *, timeout: float, max_top_k: int = 10_000) -> None:
        self._index = index
        self._timeout = timeout
        self._max_top_k = max_top_k

    def _budget(self, remaining: float | None) -> float:
        return self._timeout if remaining is None else max(0.0, min(self._timeout, remaining))

    @staticmethod
    def _index_id(index_id: str) -> str:
        if not index_id:
            raise InvalidRequest("index_id is required")
        return index_id

    async def upsert(self, index_id: str, chunks: Sequence[Chunk], *, remaining: float | None = None) -> int:
        """Write ``chunks`` into ``index_id`` (replacing same ids); returns how many were written.

        A chunk without an index id takes the request's; one naming another index is refused.
        """
        ready = claim_chunks(index_id, chunks)
        async with asyncio.timeout(self._budget(remaining)):
            await self._index.upsert(index_id, ready)
        return len(ready)

    async def search(
        self,
        index_id: str,
        query: str,
        top_k: int,
        filter: FilterNode | None,
        *,
        remaining: float | None = None,
    ) -> SearchResult:
        """BM25 top-k with the filter applied in the engine, and the engine time it took.

        ``top_k`` 0 asks for nothing (no hits); above ``max_top_k`` is refused, as in dense.
        """
        index_id = self._index_id(index_id)
        if top_k < 0 or top_k > self._max_top_k:
            raise InvalidRequest(f"top_k must be between 0 and {self._max_top_k}")
        started = time.perf_counter()
        async with asyncio.timeout(self._budget(remaining)):
            hits = await self._index.search(index_id, query, top_k, filter)
        return SearchResult(hits=hits, seconds=time.perf_counter() - started)

    async def delete_file(self, index_id: str, file_id: str, *, remaining: float | None = None) -> int:
        """Delete a file's chunks; returns how many were deleted."""
        index_id = self._index_id(index_id)
        if not file_id:
            raise InvalidRequest("file_id is required")
        async with asyncio.timeout(self._budget(remaining)):
            return await self._index.delete_file(index_id, file_id)

    async def drop(self, index_id: str, *, remaining: float | None = None) -> int:
        """Delete a whole index; returns how many chunks it held."""
        index_id = self._index_id(index_id)
        async with asyncio.timeout(self._budget(remaining)):
            try:
                held = await self._index.count(index_id)
            except IndexDamaged:  # unreadable, and about to be removed: its count is unknown
                held = 0
            await self._index.drop(index_id)
        return held

    async def count(
        self, index_id: str, file_id: str | None = None, *, remaining: float | None = None
    ) -> int:
        """Chunks in an index, or of one file in it."""
        index_id = self._index_id(index_id)
        async with asyncio.timeout(self._budget(remaining)):
            return await self._index.count(index_id, file_id or None)

    def damaged(self) -> dict[str, str]:
        """Indexes the engine cannot read, with the reason."""
        return self._index.damaged()

    async def ready(self) -> bool:
        """Whether the engine answers (drives the gRPC health status)."""
        return await self._index.ready()

    async def close(self) -> None:
        await self._index.close()
