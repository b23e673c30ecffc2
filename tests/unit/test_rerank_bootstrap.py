"""RerankSettings from the environment and the adapter the composition root picks."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from services.rerank.adapters.http import HttpReranker
from services.rerank.adapters.late_interaction import LateInteractionReranker
from services.rerank.bootstrap import bootstrap, build_reranker
from services.rerank.errors import TooManyPassages
from services.rerank.settings import RerankSettings
from tests.unit.test_rerank_onnx_cross_encoder import write_model, write_tokenizer


def test_defaults_are_the_offline_late_interaction_reranker(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("BACKEND", "MODEL", "URL"):
        monkeypatch.delenv(f"QUARRY_RERANK_{name}", raising=False)
    monkeypatch.delenv("QUARRY_RERANK_MAX_TOKENS", raising=False)
    settings = RerankSettings()
    assert settings.backend == "late_interaction"
    reranker = build_reranker(settings)
    assert isinstance(reranker, LateInteractionReranker)
    assert reranker._encoder.max_tokens == 128  # the measured default for late interaction


async def test_http_backend_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUARRY_RERANK_BACKEND", "http")
    monkeypatch.setenv("QUARRY_RERANK_URL", "http://tei.internal:8080")
    monkeypatch.setenv("QUARRY_RERANK_PROTOCOL", "cohere")
    monkeypatch.setenv("QUARRY_RERANK_API_KEY", "sk-secret-123")
    monkeypatch.setenv("QUARRY_RERANK_MODEL", "rerank-v3.5")
    settings = RerankSettings()
    assert settings.api_key is not None and settings.api_key.get_secret_value() == "sk-secret-123"
    assert "sk-secret-123" not in repr(settings)
    reranker = build_reranker(settings)
    assert isinstance(reranker, HttpReranker)
    assert reranker.endpoint == "http://tei.internal:8080/v1/rerank"
    await reranker.close()


async def test_onnx_backend_from_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    write_tokenizer(tmp_path / "tokenizer.json")
    write_model(tmp_path / "model.onnx")
    monkeypatch.setenv("QUARRY_RERANK_BACKEND", "onnx")
    monkeypatch.setenv("QUARRY_RERANK_MODEL", str(tmp_path))
    monkeypatch.setenv("QUARRY_RERANK_SIGMOID", "true")
    app = bootstrap(RerankSettings())
    assert app.service.model.startswith("cross-encoder:")
    scored = await app.service.score("cat", ["cat", "dog"])
    assert scored.scores[0] > scored.scores[1] and all(0 < s < 1 for s in scored.scores)
    assert await app.ready()
    await app.close()


@pytest.mark.parametrize("backend", ["http", "onnx"])
def test_backend_without_its_target_is_rejected_at_start(
    monkeypatch: pytest.MonkeyPatch, backend: str
) -> None:
    monkeypatch.delenv("QUARRY_RERANK_URL", raising=False)
    monkeypatch.delenv("QUARRY_RERANK_MODEL", raising=False)
    monkeypatch.setenv("QUARRY_RERANK_BACKEND", backend)
    with pytest.raises(ValidationError, match="QUARRY_RERANK_"):
        RerankSettings()


async def test_service_limits_passages_and_skips_empty_requests(tmp_path: Path) -> None:
    write_tokenizer(tmp_path / "tokenizer.json")
    write_model(tmp_path / "model.onnx")
    app = bootstrap(RerankSettings(backend="onnx", model=str(tmp_path), max_passages=2))
    try:
        assert (await app.service.score("cat", [])).scores == []
        with pytest.raises(TooManyPassages):
            await app.service.score("cat", ["a", "b", "c"])
    finally:
        await app.close()
