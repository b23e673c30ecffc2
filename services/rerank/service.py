"""The rerank use case: score passages against a query, in domain types only."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from services.common.telemetry import RERANK_PASSAGES, RERANK_SECONDS
from services.rerank.errors import RerankError, TooManyPassages
from services.rerank.ports import Reranker


@dataclass(frozen=True, slots=True)
class Scored:
    """One score per passage, in request order, and the model that produced them."""

    scores: list[float]
    model: str


class RerankService:
    """Validates a request, bounds it by a deadline and asks the reranker."""

    def __init__(
        self, reranker: Reranker, *, max_passages: int = 1000, default_timeout: float = 10.0
    ) -> None:
        self._reranker = reranker
        self._max_passages = max_passages
        self._default_timeout = default_timeout

    @property
    def model(self) -> str:
        return self._reranker.model_name

    async def score(self, query: str, passages: Sequence[str], *, timeout: float | None = None) -> Scored:
        """Score ``passages`` against ``query`` within ``timeout`` seconds (the caller's deadline),
        or the service's default when the caller set none. ``TimeoutError`` past it."""
        if len(passages) > self._max_passages:
            raise TooManyPassages(f"{len(passages)} passages in one call; the limit is {self._max_passages}")
        if not passages:
            return Scored([], self.model)
        budget = self._default_timeout if timeout is None else min(timeout, self._default_timeout)
        started = time.perf_counter()
        scores = await self._reranker.score(query, passages, timeout=budget)
        RERANK_SECONDS.labels(self.model).observe(time.perf_counter() - started)
        RERANK_PASSAGES.labels(self.model).inc(len(passages))
        if len(scores) != len(passages):
            raise RerankError(f"reranker returned {len(scores)} scores for {len(passages)} passages")
        return Scored(list(scores), self.model)

    async def ready(self) -> bool:
        """Whether the reranker can score now."""
        return await self._reranker.ready()

    async def close(self) -> None:
        await self._reranker.close()
