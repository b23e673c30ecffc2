"""Runs a synchronous model call off the event loop under a deadline, and the shared shape of
the in-process model rerankers built on it.

The worker receives the absolute deadline (``time.monotonic()``) and checks it between batches,
so a call abandoned by its caller stops at the next batch boundary instead of burning the CPU
for a result nobody reads.
"""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


def check_deadline(deadline: float | None) -> None:
    """Raise ``TimeoutError`` when ``deadline`` (monotonic seconds) has passed."""
    if deadline is not None and time.monotonic() >= deadline:
        raise TimeoutError("rerank deadline exceeded")


class ModelRunner:
    """A small dedicated executor for one model (the model itself serialises its runs)."""

    def __init__(self, name: str, workers: int = 2) -> None:
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"rerank-{name}")

    async def run(self, fn: Callable[[float | None], T], timeout: float | None) -> T:
        """``fn(deadline)`` in the executor; ``TimeoutError`` once ``timeout`` seconds pass."""
        if timeout is not None and timeout <= 0:
            raise TimeoutError("rerank deadline exceeded")
        deadline = None if timeout is None else time.monotonic() + timeout
        future = asyncio.get_running_loop().run_in_executor(self._executor, fn, deadline)
        async with asyncio.timeout(timeout):
            return await future

    def close(self) -> None:
        """Drop queued work; a batch already running finishes and is discarded."""
        self._executor.shutdown(wait=False, cancel_futures=True)


class LocalModelReranker(ABC):
    """An in-process model behind ``ports.Reranker``: subclasses give the synchronous
    ``_score`` (checking the deadline between batches) and ``_probe``; scoring, readiness and
    teardown run through one ``ModelRunner``."""

    def __init__(self, runner_name: str) -> None:
        self._runner = ModelRunner(runner_name)
        self._ready = False

    @abstractmethod
    def _score(self, query: str, passages: Sequence[str], deadline: float | None) -> list[float]: ...

    @abstractmethod
    def _probe(self) -> bool:
        """Whether the model answers a trivial input."""

    async def score(
        self, query: str, passages: Sequence[str], *, timeout: float | None = None
    ) -> list[float]:
        """One score per passage, in order; ``TimeoutError`` after ``timeout`` seconds."""
        if not passages:
            return []
        return await self._runner.run(lambda deadline: self._score(query, passages, deadline), timeout)

    async def ready(self) -> bool:
        """True once the model has answered the probe (probed until it does)."""
        if not self._ready:
            self._ready = await self._runner.run(lambda _: self._probe(), None)
        return self._ready

    async def close(self) -> None:
        self._runner.close()
