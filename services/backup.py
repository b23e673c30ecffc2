"""Backups of an embedded data dir (``quarry up``'s): one tar.gz with a manifest of checksums.

The data dir holds the catalog (SQLite), the dense shards (Qdrant edge), the keyword indexes
(tantivy) and the stack's API key. They agree only when nothing writes to them, so a backup is
taken of a stopped stack: ``backup`` refuses while any of the stack's processes still listens.
``restore`` checks every file against the manifest before anything is written, and extracts
into an empty (or missing) data dir only, with tarfile's ``data`` filter (no links out of the
tree, no absolute paths). Cluster deployments back up their engines instead (docs/deploy.md).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from services.launcher import port_holder

MANIFEST = "quarry-backup.json"
FORMAT = 1
#: Run-time state that is not data: port files, logs.
SKIPPED = ("run", "stack.log")


class BackupError(RuntimeError):
    """A backup or restore that cannot proceed; the message says why."""


@dataclass(frozen=True)
class Summary:
    path: Path
    files: int
    bytes: int


def _quarry_version() -> str:
    try:
        return version("quarry")
    except PackageNotFoundError:
        return "0.0.0"


def running_processes(data_dir: Path) -> list[str]:
    """The stack's processes that still listen (from the port files of ``run/``)."""
    alive = []
    for port_file in sorted((data_dir / "run").glob("*.port")):
        try:
            port = int(port_file.read_text().strip())
        except ValueError:
            continue
        if port_holder("127.0.0.1", port) is not None:
            alive.append(f"{port_file.stem} (port {port})")
    return alive


def _data_files(data_dir: Path) -> list[Path]:
    out = []
    for path in sorted(data_dir.rglob("*")):
        relative = path.relative_to(data_dir)
        if relative.parts[0] in SKIPPED or not path.is_file() or path.is_symlink():
            continue
        out.append(path)
    return out


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def backup(data_dir: Path, destination: Path) -> Summary:
    """Write ``destination`` (tar.gz) from a stopped stack's ``data_dir``."""
    if not (data_dir / "files").is_dir():
        raise BackupError(f"{data_dir} is not a Quarry data dir (no files/ catalog)")
    alive = running_processes(data_dir)
    if alive:
        raise BackupError(f"the stack using {data_dir} is running ({', '.join(alive)}); stop it first (Ctrl-C on "
                          "`quarry up`), so that the catalog and the engines agree in the backup")
    files = _data_files(data_dir)
    manifest = {
        "format": FORMAT, "quarry_version": _quarry_version(), "created_at": datetime.now(UTC).isoformat(),
        "files": {str(p.relative_to(data_dir)): {"sha256": _sha256(p), "bytes": p.stat().st_size} for p in files},
    }
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(destination.name + ".partial")
    with tarfile.open(partial, "w:gz") as tar:
        body = json.dumps(manifest, indent=2).encode()
        info = tarfile.TarInfo(MANIFEST)
        info.size, info.mtime = len(body), int(datetime.now(UTC).timestamp())
        tar.addfile(info, io.BytesIO(body))
        for path in files:
            tar.add(path, arcname=str(Path("data") / path.relative_to(data_dir)), recursive=False)
    partial.replace(destination)
    return Summary(destination, len(files), sum(f["bytes"] for f in manifest["files"].values()))


def restore(source: Path, data_dir: Path) -> Summary:
    """Check ``source`` against its manifest, then unpack it into the empty ``data_dir``."""
    if data_dir.exists() and any(data_dir.iterdir()):
        raise BackupError(f"{data_dir} is not empty; restore into a new data dir (or move this one away)")
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    try:
        return _restore(source, data_dir)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise BackupError(f"{source} cannot be read as a Quarry backup: {exc}") from exc


def _restore(source: Path, data_dir: Path) -> Summary:
    # Unpacked beside the target (same filesystem), moved in only once every checksum matched.
    with tarfile.open(source, "r:gz") as tar, tempfile.TemporaryDirectory(dir=data_dir.parent) as tmp:
        try:
            manifest = json.load(tar.extractfile(MANIFEST))  # type: ignore[arg-type]
        except (KeyError, json.JSONDecodeError, TypeError) as exc:
            raise BackupError(f"{source} is not a Quarry backup (no readable {MANIFEST})") from exc
        if manifest.get("format") != FORMAT:
            raise BackupError(f"{source}: backup format {manifest.get('format')!r}, this Quarry reads {FORMAT}")
        tar.extractall(tmp, filter="data")
        unpacked = Path(tmp) / "data"
        found = {str(p.relative_to(unpacked)) for p in unpacked.rglob("*") if p.is_file()}
        expected = manifest["files"]
        if found != set(expected):
            raise BackupError(f"{source}: files differ from its manifest (missing {sorted(set(expected) - found)[:3]}, "
                              f"extra {sorted(found - set(expected))[:3]})")
        for name, meta in expected.items():
            if _sha256(unpacked / name) != meta["sha256"]:
                raise BackupError(f"{source}: {name} does not match its checksum; the backup is damaged")
        data_dir.mkdir(parents=True, exist_ok=True)
        for entry in unpacked.iterdir():
            shutil.move(str(entry), data_dir / entry.name)
    key = data_dir / "api_key"
    if key.exists():
        os.chmod(key, 0o600)
    return Summary(data_dir, len(expected), sum(m["bytes"] for m in expected.values()))
