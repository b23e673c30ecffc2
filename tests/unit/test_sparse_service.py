"""The sparse service's use cases over the real tantivy adapter, and its settings/bootstrap."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from services.common.domain import Chunk, FilterNode, Hit
from services.common.errors import InvalidArgument
from services.sparse.adapters.opensearch import OpenSearchKeywordIndex
from services.sparse.adapters.tantivy import TantivyKeywordIndex
from services.sparse.bootstrap import bootstrap
from services.sparse.errors import InvalidRequest
from services.sparse.service import SparseService
from services.sparse.settings import SparseSettings


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[SparseService]:
    svc = SparseService(
        TantivyKeywordIndex(tmp_path, writer_heap_bytes=16 << 20, threads=2),
        timeout=10.0,
        max_top_k=4,
    )
    yield svc
    await svc.close()


def _chunks(n: int, index_id: str = "") -> list[Chunk]:
    return [Chunk(id=f"c{i}", index_id=index_id, file_id="f", content=f"granite block {i}") for i in range(n)]


async def test_upsert_fills_the_index_id_and_counts(service: SparseService) -> None:
    assert await service.upsert("idx", _chunks(6)) == 6
    assert await service.count("idx") == 6
    assert await service.count("idx", "f") == 6
    hits = (await service.search("idx", "granite", 4, None)).hits
    assert {h.chunk.index_id for h in hits} == {"idx"}


async def test_top_k_zero_asks_for_nothing_and_too_large_is_refused(service: SparseService) -> None:
    await service.upsert("idx", _chunks(6))
    assert (await service.search("idx", "granite", 0, None)).hits == []
    assert len((await service.search("idx", "granite", 4, None)).hits) == 4
    with pytest.raises(InvalidRequest):
        await service.search("idx", "granite", 5, None)
    result = await service.search("idx", "granite", 2, None)
    assert len(result.hits) == 2 and result.seconds > 0


async def test_drop_reports_how_many_chunks_it_held(service: SparseService) -> None:
    await service.upsert("idx", _chunks(3))
    assert await service.drop("idx") == 3
    assert await service.drop("idx") == 0


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.upsert("", _chunks(1)),
        lambda s: s.upsert("idx", _chunks(1, index_id="other")),
        lambda s: s.upsert("idx", [Chunk(id="", index_id="idx", file_id="f", content="x")]),
        lambda s: s.search("idx", "granite", -1, None),
        lambda s: s.search("", "granite", 1, None),
        lambda s: s.delete_file("idx", ""),
        lambda s: s.count(""),
    ],
)
async def test_invalid_requests_are_refused(service: SparseService, call) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidArgument):  # INVALID_ARGUMENT over gRPC
        await call(service)


class StuckKeywordIndex(TantivyKeywordIndex):
    """A keyword index whose searches never finish: the service's budget must end them."""

    async def search(self, index_id: str, query: str, top_k: int, filter: FilterNode | None) -> list[Hit]:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def upsert(self, index_id: str, chunks: Sequence[Chunk]) -> None:
        await asyncio.Event().wait()


async def test_the_caller_deadline_bounds_every_call(tmp_path: Path) -> None:
    svc = SparseService(StuckKeywordIndex(tmp_path, writer_heap_bytes=16 << 20), timeout=30.0)
    try:
        with pytest.raises(TimeoutError):
            await svc.search("idx", "granite", 5, None, remaining=0.01)
        with pytest.raises(TimeoutError):
            await svc.upsert("idx", _chunks(1), remaining=0.01)
    finally:
        await svc.close()


def test_settings_read_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("QUARRY_SPARSE_DATA_DIR", str(tmp_path / "kw"))
    monkeypatch.setenv("QUARRY_SPARSE_WRITER_HEAP_MB", "32")
    monkeypatch.setenv("QUARRY_SPARSE_PORT", "0")
    monkeypatch.setenv("QUARRY_SPARSE_TIMEOUT", "2.5")
    settings = SparseSettings()
    assert (settings.data_dir, settings.writer_heap_mb, settings.port, settings.timeout) == (
        str(tmp_path / "kw"),
        32,
        0,
        2.5,
    )
    assert settings.opensearch_url is None


async def test_bootstrap_wires_tantivy(tmp_path: Path) -> None:
    app = bootstrap(SparseSettings(data_dir=str(tmp_path / "kw")))
    try:
        assert await app.ready() is True
        assert (tmp_path / "kw").is_dir()
    finally:
        await app.close()


async def test_an_opensearch_url_selects_the_opensearch_adapter_without_calling_it(tmp_path: Path) -> None:
    # Port 9 (discard) on loopback: nothing answers, so readiness is false and nothing was written.
    app = bootstrap(SparseSettings(data_dir=str(tmp_path / "unused"), opensearch_url="http://127.0.0.1:9"))
    try:
        assert isinstance(app.service._index, OpenSearchKeywordIndex)
        assert await app.ready() is False
        assert not (tmp_path / "unused").exists()
    finally:
        await app.close()
