"""The retrieve path's view of the catalog (``IndexCache``) and how ``UseCases.index`` uses it."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import pytest

from gateway.cache import IndexCache
from gateway.settings import GatewaySettings
from gateway.usecases import UseCases
from services._proto.quarry.files.v1 import files_pb2

PROJECT = files_pb2.Project(id="p1", name="default")


def index(generation: int, index_id: str = "idx-1") -> files_pb2.Index:
    return files_pb2.Index(id=index_id, project_id=PROJECT.id, name="docs", generation=generation)


class FakeFiles:
    """GetIndex answering the catalog's current state, counting calls."""

    def __init__(self, current: files_pb2.Index) -> None:
        self.current = current
        self.calls = 0

    async def GetIndex(self, request: files_pb2.GetIndexRequest, timeout: float) -> files_pb2.Index:
        assert timeout > 0
        self.calls += 1
        return self.current


def usecases(files: FakeFiles, ttl: float) -> UseCases:
    backends: Any = SimpleNamespace(files=files)
    return UseCases(GatewaySettings(), backends, cache=None, indexes=IndexCache(ttl), auth=None)  # type: ignore[arg-type]


def test_an_entry_lives_for_the_ttl_under_its_id_and_the_id_it_was_asked_by(monkeypatch: pytest.MonkeyPatch) -> None:
    cache = IndexCache(ttl_seconds=1.0)
    now = time.monotonic()
    cache.put("p1", index(3), "my-pipeline-alias")
    assert cache.get("p1", "idx-1") == index(3) == cache.get("p1", "my-pipeline-alias")
    assert cache.get("p2", "idx-1") is None  # another project never sees it
    monkeypatch.setattr(time, "monotonic", lambda: now + 1.5)
    assert cache.get("p1", "idx-1") is None


def test_forget_drops_every_name_of_the_index() -> None:
    cache = IndexCache(ttl_seconds=60)
    cache.put("p1", index(3), "alias")
    cache.put("p1", index(1, "idx-2"))
    cache.forget("p1", "idx-1")
    assert cache.get("p1", "idx-1") is None and cache.get("p1", "alias") is None
    assert cache.get("p1", "idx-2") == index(1, "idx-2")


def test_ttl_zero_keeps_nothing_and_the_size_is_bounded() -> None:
    off = IndexCache(ttl_seconds=0)
    off.put("p1", index(1))
    assert off.get("p1", "idx-1") is None
    small = IndexCache(ttl_seconds=60, max_entries=2)
    for n in range(5):
        small.put("p1", index(1, f"idx-{n}"))
    assert small.get("p1", "idx-4") is not None
    assert sum(small.get("p1", f"idx-{n}") is not None for n in range(5)) <= 2


async def test_retrieves_reuse_the_index_and_any_fresh_read_refreshes_it() -> None:
    files = FakeFiles(index(1))
    use = usecases(files, ttl=60)

    assert (await use.index(PROJECT.id, "idx-1", for_query=True)).generation == 1
    assert (await use.index(PROJECT.id, "idx-1", for_query=True)).generation == 1
    assert files.calls == 1  # the second retrieve did not ask the catalog

    files.current = index(2)  # a sync finished
    assert (await use.index(PROJECT.id, "idx-1", for_query=True)).generation == 1  # within the ttl
    # A client polling the sync through this gateway reads afresh, and retrieves follow at once.
    assert (await use.index(PROJECT.id, "idx-1")).generation == 2
    assert (await use.index(PROJECT.id, "idx-1", for_query=True)).generation == 2
    assert files.calls == 2


async def test_with_the_view_off_every_retrieve_reads_the_catalog() -> None:
    files = FakeFiles(index(1))
    use = usecases(files, ttl=0)
    for _ in range(3):
        await use.index(PROJECT.id, "idx-1", for_query=True)
    assert files.calls == 3
