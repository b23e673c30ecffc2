"""Composition root of the rerank process: settings -> reranker adapter -> service."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from services.rerank.ports import Reranker
from services.rerank.service import RerankService
from services.rerank.settings import CROSS_ENCODER_MAX_TOKENS, LATE_INTERACTION_MAX_TOKENS, RerankSettings


@dataclass(frozen=True)
class Bootstrapped:
    """What ``__main__`` (and tests) need to serve: the service, its probe and its teardown."""

    service: RerankService
    ready: Callable[[], Awaitable[bool]]
    close: Callable[[], Awaitable[None]]


def build_reranker(settings: RerankSettings) -> Reranker:
    """The adapter ``settings.backend`` names, configured from ``settings``."""
    if settings.backend == "http":
        from services.rerank.adapters.http import HttpReranker

        assert settings.url is not None  # the settings validator guarantees it
        return HttpReranker(
            settings.url,
            protocol=settings.protocol,
            model=settings.model,
            api_key=settings.api_key.get_secret_value() if settings.api_key else None,
            batch_size=settings.batch_size,
            timeout=settings.timeout,
            retries=settings.retries,
        )
    if settings.backend == "onnx":
        from services.rerank.adapters.onnx_cross_encoder import OnnxCrossEncoderReranker

        assert settings.model is not None
        return OnnxCrossEncoderReranker.load(
            settings.model,
            max_tokens=settings.max_tokens or CROSS_ENCODER_MAX_TOKENS,
            batch_size=settings.batch_size,
            sigmoid=settings.sigmoid,
            threads=settings.threads,
        )
    from services.rerank.adapters.late_interaction import LateInteractionReranker

    return LateInteractionReranker.load(
        settings.model,
        max_tokens=settings.max_tokens or LATE_INTERACTION_MAX_TOKENS,
        batch_size=settings.batch_size,
        threads=settings.threads,
        cache_size=settings.cache_size,
        cache_mb=settings.cache_mb,
        batch_tokens=settings.batch_tokens,
    )


def bootstrap(settings: RerankSettings, reranker: Reranker | None = None) -> Bootstrapped:
    """Wire the service; ``reranker`` overrides the one the settings pick (tests)."""
    service = RerankService(
        reranker if reranker is not None else build_reranker(settings),
        max_passages=settings.max_passages,
        default_timeout=settings.timeout,
    )
    return Bootstrapped(service=service, ready=service.ready, close=service.close)
