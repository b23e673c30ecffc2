"""A tantivy index whose files are corrupt or gone: reported as damaged (DATA_LOSS), at start-up
and on a read, the other indexes untouched; dropping it (what a rebuild does first) clears it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from services.common.domain import Chunk
from services.sparse.adapters.tantivy import TantivyKeywordIndex, index_dir_name
from services.sparse.errors import IndexDamaged


def _chunks(index_id: str, n: int = 20) -> list[Chunk]:
    return [Chunk(id=f"{index_id}-{i}", index_id=index_id, file_id="f", content=f"granite quarry block {i}")
            for i in range(n)]


def _open(path: Path) -> TantivyKeywordIndex:
    return TantivyKeywordIndex(path, writer_heap_bytes=16 << 20, threads=1)


async def _written(path: Path, *index_ids: str) -> None:
    kw = _open(path)
    for index_id in index_ids:
        await kw.upsert(index_id, _chunks(index_id))
    await kw.close()


def _corrupt(path: Path, index_id: str, how: str) -> None:
    folder = path / index_dir_name(index_id)
    if how == "meta":
        (folder / "meta.json").write_text("{not json")
        return
    for file in folder.iterdir():
        if how == "scramble" and file.suffix in (".idx", ".term", ".store"):
            file.write_bytes(os.urandom(file.stat().st_size))
        elif how == "remove" and file.suffix == ".term":
            file.unlink()


@pytest.mark.parametrize("how", ["meta", "scramble", "remove"])
async def test_a_damaged_index_is_found_at_start_up_and_refuses_every_call(tmp_path: Path, how: str) -> None:
    await _written(tmp_path, "good", "bad")
    _corrupt(tmp_path, "bad", how)
    kw = _open(tmp_path)
    try:
        assert await kw.ready() is True  # the process serves: one index is damaged, not the engine
        assert set(kw.damaged()) == {"bad"}
        for call in (kw.search("bad", "granite", 5, None), kw.count("bad"), kw.upsert("bad", _chunks("bad", 1)),
                     kw.delete_file("bad", "f")):
            with pytest.raises(IndexDamaged) as damaged:
                await call
            assert damaged.value.index_id == "bad"
        assert len(await kw.search("good", "granite", 50, None)) == 20
        assert await kw.count("good") == 20
    finally:
        await kw.close()


async def test_damage_found_by_a_read_is_recorded_too(tmp_path: Path) -> None:
    """Without the start-up scan (``ready`` not called yet), the first read finds it."""
    await _written(tmp_path, "bad")
    _corrupt(tmp_path, "bad", "scramble")
    kw = _open(tmp_path)
    try:
        with pytest.raises(IndexDamaged):
            await kw.search("bad", "granite", 5, None)
        assert set(kw.damaged()) == {"bad"}
    finally:
        await kw.close()


async def test_dropping_a_damaged_index_clears_it_and_it_can_be_written_again(tmp_path: Path) -> None:
    await _written(tmp_path, "bad")
    _corrupt(tmp_path, "bad", "meta")
    kw = _open(tmp_path)
    try:
        await kw.ready()
        assert "bad" in kw.damaged()
        await kw.drop("bad")
        assert kw.damaged() == {}
        await kw.upsert("bad", _chunks("bad", 3))
        assert await kw.count("bad") == 3
    finally:
        await kw.close()


async def test_a_bad_query_is_not_mistaken_for_damage(tmp_path: Path) -> None:
    await _written(tmp_path, "good")
    kw = _open(tmp_path)
    try:
        assert await kw.search("good", ")(][}{^~*?\\/", 5, None) == []
        assert kw.damaged() == {}
    finally:
        await kw.close()
