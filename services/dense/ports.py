"""What the dense service depends on: an embedder and a vector index."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import numpy.typing as npt

from services.common.domain import Chunk, FilterNode, Hit
from services.common.models import TokenStates


class Embedder(Protocol):
    """Turns text into unit-length vectors."""

    @property
    def model_name(self) -> str: ...

    @property
    def dim(self) -> int: ...

    def embed(self, texts: Sequence[str], *, is_query: bool = False) -> npt.NDArray[np.float32]:
        """One L2-normalised row per text, in order (batched internally)."""
        ...

    def embed_with_tokens(
        self, texts: Sequence[str], *, is_query: bool = False
    ) -> tuple[npt.NDArray[np.float32], list[TokenStates]]:
        """``embed`` and, from the same model runs, each text's content-token states (the
        late-interaction vectors stored with a chunk and scored against a query's)."""
        ...


class VectorIndex(Protocol):
    """One logical collection per Quarry index; every method is safe to retry."""

    async def upsert(
        self,
        index_id: str,
        chunks: Sequence[Chunk],
        vectors: npt.NDArray[np.float32],
        tokens: Sequence[npt.NDArray[np.float16]] | None = None,
    ) -> None:
        """Write chunks with their vectors; an existing id is overwritten, token vectors included.

        ``tokens``: each chunk's token vectors (unit rows) for late interaction, stored in the
        same point, so they are deleted and rewritten with it. An index created before token
        vectors existed (or while they were off) does not store them.
        """
        ...

    async def late_scores(
        self, index_id: str, query: npt.NDArray[np.float32], chunk_ids: Sequence[str]
    ) -> list[float] | None:
        """MaxSim (mean over ``query``'s unit rows) of each chunk's stored token vectors, in order.

        ``None`` when any of the chunks has none stored (an index written without them, or a
        chunk gone since it was retrieved): the caller scores the window another way.
        """
        ...

    async def search(
        self, index_id: str, vector: npt.NDArray[np.float32], top_k: int, filter: FilterNode | None
    ) -> list[Hit]:
        """Top-k by cosine similarity among chunks matching the filter (pushed into the engine).

        An index that does not exist yet returns no hits.
        """
        ...

    async def delete_file(self, index_id: str, file_id: str) -> int:
        """Remove every chunk of one file; returns how many were removed (best effort)."""
        ...

    async def drop(self, index_id: str) -> None:
        """Remove the whole index; dropping a missing index is not an error."""
        ...

    async def count(self, index_id: str, file_id: str | None = None) -> int: ...

    async def ready(self) -> bool:
        """True when the backend answers (drives the gRPC health status)."""
        ...

    async def close(self) -> None: ...
