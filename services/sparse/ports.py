"""What the sparse service depends on: a BM25 keyword index."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from services.common.domain import Chunk, FilterNode, Hit


class KeywordIndex(Protocol):
    """One logical BM25 index per Quarry index; every method is safe to retry."""

    async def upsert(self, index_id: str, chunks: Sequence[Chunk]) -> None:
        """Write chunks; an existing id is replaced, never duplicated."""
        ...

    async def search(self, index_id: str, query: str, top_k: int, filter: FilterNode | None) -> list[Hit]:
        """BM25 top-k over chunk content among chunks matching the filter (in the engine).

        Free text from users: never a query-parser syntax error. An index that does not
        exist yet returns no hits.
        """
        ...

    async def delete_file(self, index_id: str, file_id: str) -> int: ...

    async def drop(self, index_id: str) -> None: ...

    async def count(self, index_id: str, file_id: str | None = None) -> int: ...

    async def ready(self) -> bool: ...

    def damaged(self) -> dict[str, str]:
        """Indexes that cannot be read, with the reason (an engine that cannot tell: none)."""
        ...

    async def close(self) -> None: ...
