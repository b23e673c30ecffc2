"""What the rerank service depends on: something that scores (query, passage) pairs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class Reranker(Protocol):
    @property
    def model_name(self) -> str: ...

    async def score(self, query: str, passages: Sequence[str], *, timeout: float | None = None) -> list[float]:
        """One score per passage, in order; higher is more relevant.

        Raises ``TimeoutError`` when ``timeout`` seconds pass first.
        """
        ...

    async def ready(self) -> bool: ...

    async def close(self) -> None: ...
