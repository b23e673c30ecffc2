"""``QUARRY_DENSE_ENGINE`` / ``QUARRY_SPARSE_ENGINE`` select the engine explicitly; the URL the
engine needs stays required, and a URL that contradicts the chosen engine is refused."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.dense.settings import DenseSettings
from services.sparse.settings import SparseSettings


@pytest.mark.parametrize(("kwargs", "engine"), [
    ({}, "edge"),
    ({"qdrant_url": "http://qdrant:6333"}, "server"),
    ({"engine": "edge"}, "edge"),
    ({"engine": "server", "qdrant_url": "http://qdrant:6333"}, "server"),
])
def test_dense_engine(kwargs: dict[str, str], engine: str) -> None:
    assert DenseSettings(**kwargs).resolved_engine == engine


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"engine": "server"}, "needs QUARRY_DENSE_QDRANT_URL"),
    ({"engine": "edge", "qdrant_url": "http://qdrant:6333"}, "unset one of them"),
    ({"engine": "qdrant"}, "engine"),
])
def test_dense_engine_refusals(kwargs: dict[str, str], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        DenseSettings(**kwargs)


@pytest.mark.parametrize(("kwargs", "engine"), [
    ({}, "tantivy"),
    ({"opensearch_url": "http://os:9200"}, "opensearch"),
    ({"engine": "opensearch", "opensearch_url": "http://a:9200,http://b:9200"}, "opensearch"),
])
def test_sparse_engine(kwargs: dict[str, str], engine: str) -> None:
    assert SparseSettings(**kwargs).resolved_engine == engine


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"engine": "opensearch"}, "needs QUARRY_SPARSE_OPENSEARCH_URL"),
    ({"engine": "opensearch", "opensearch_url": " , "}, "needs QUARRY_SPARSE_OPENSEARCH_URL"),
    ({"engine": "tantivy", "opensearch_url": "http://os:9200"}, "unset one of them"),
])
def test_sparse_engine_refusals(kwargs: dict[str, str], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        SparseSettings(**kwargs)


def test_the_engine_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUARRY_SPARSE_ENGINE", "opensearch")
    monkeypatch.setenv("QUARRY_SPARSE_OPENSEARCH_URL", "http://os:9200")
    monkeypatch.setenv("QUARRY_DENSE_ENGINE", "edge")
    assert SparseSettings().resolved_engine == "opensearch"
    assert DenseSettings().resolved_engine == "edge"
