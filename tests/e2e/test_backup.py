"""``quarry backup`` / ``quarry restore`` of an embedded data dir: refused while the stack runs,
a restored copy answers the same queries as the original, and a damaged backup is refused
before anything is written."""

from __future__ import annotations

import gzip
import io
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from llama_cloud import LlamaCloud

from services.backup import BackupError, backup, restore
from tests.e2e.corpus import ingest_corpus
from tests.e2e.stack import running_stack

pytestmark = pytest.mark.e2e

API_KEY = "qk-backup-e2e"
QUERIES = ("how do photovoltaic panels turn sunlight into power", "glacier meltwater lakes", "sourdough starter")


def _answers(base_url: str, index_id: str) -> list[list[tuple[str, float]]]:
    client = LlamaCloud(api_key=API_KEY, base_url=base_url)
    return [[(r.content, round(r.score or 0, 6)) for r in client.retrieval.retrieve(index_id=index_id, query=q).results]
            for q in QUERIES]


def test_backup_and_restore_round_trip(tmp_path: Path) -> None:
    original, copy, archive = tmp_path / "original", tmp_path / "restored", tmp_path / "backups" / "quarry.tar.gz"
    with running_stack(original, API_KEY) as stack:
        index = ingest_corpus(LlamaCloud(api_key=API_KEY, base_url=stack.base_url), name="backed-up")
        before = _answers(stack.base_url, index.id)
        with pytest.raises(BackupError, match="running"):
            backup(original, archive)
    cli = subprocess.run([sys.executable, "-m", "services.cli", "backup", str(archive), "--data-dir", str(original),
                          "--json"], capture_output=True, text=True, timeout=300, check=False)
    assert cli.returncode == 0, cli.stderr
    assert archive.exists() and not archive.with_name(archive.name + ".partial").exists()

    summary = restore(archive, copy)
    assert summary.files > 5
    with pytest.raises(BackupError, match="not empty"):
        restore(archive, copy)
    with running_stack(copy, API_KEY) as stack:
        assert _answers(stack.base_url, index.id) == before


def _rewrite(archive: Path, damaged: Path, change: str) -> None:
    """A copy of ``archive`` with one data file's bytes changed, or one dropped."""
    with tarfile.open(archive, "r:gz") as src, tarfile.open(damaged, "w:gz") as dst:
        members = [m for m in src.getmembers() if m.isfile()]
        victim = next(m for m in members if m.name.startswith("data/") and m.size > 0)
        for m in members:
            if m.name == victim.name and change == "drop":
                continue
            body = src.extractfile(m).read()  # type: ignore[union-attr]
            if m.name == victim.name:
                body = bytes([body[0] ^ 0xFF]) + body[1:]
            info = tarfile.TarInfo(m.name)
            info.size = len(body)
            dst.addfile(info, io.BytesIO(body))


@pytest.mark.parametrize("change", ["flip", "drop"])
def test_a_damaged_backup_is_refused_before_anything_is_written(tmp_path: Path, change: str) -> None:
    data = tmp_path / "data"
    (data / "files").mkdir(parents=True)
    (data / "files" / "catalog.db").write_bytes(b"catalog bytes " * 100)
    (data / "sparse").mkdir()
    (data / "sparse" / "segment").write_bytes(b"segment bytes " * 100)
    archive, damaged = tmp_path / "good.tar.gz", tmp_path / "bad.tar.gz"
    backup(data, archive)
    _rewrite(archive, damaged, change)
    target = tmp_path / "target"
    with pytest.raises(BackupError, match=r"checksum|manifest"):
        restore(damaged, target)
    assert not target.exists() or not any(target.iterdir())
    not_a_backup = tmp_path / "random.tar.gz"
    not_a_backup.write_bytes(gzip.compress(b"not a tar"))
    with pytest.raises(BackupError, match="cannot be read"):
        restore(not_a_backup, tmp_path / "target2")
