"""The ``buf`` CLI for the proto API checks, at one pinned version, installed from npm on first use.

``buf_binary()`` returns the native ``buf`` of ``@bufbuild/buf@BUF_VERSION``: ``$QUARRY_BUF`` when
set (a binary the caller vouches for), else the copy in the cache directory
(``$QUARRY_BUF_CACHE``, default ``~/.cache/quarry/buf``, one folder per version), installed there
once with ``npm install --prefix`` (the npm package ships the binary as a per-platform optional
dependency, ``@bufbuild/buf-<os>-<arch>``; no install script is needed or run). A buf found on
PATH is not used: lint and breaking rules change between releases, and the tests must give
every developer and CI the same verdict.

Standard library only, so that ``scripts/proto_baseline.py`` can use it without pytest.

    python -m tests.protoapi.buf          # install if needed, print the binary's path
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

#: ``@bufbuild/buf`` on npm; bump it on purpose (and rerun the tests: new rules may fire).
BUF_VERSION = "1.75.0"
NPM_TIMEOUT_S = 300.0


class BufUnavailable(RuntimeError):
    """buf could not be found or installed; the message says why."""


def cache_root() -> Path:
    return Path(os.environ.get("QUARRY_BUF_CACHE") or Path.home() / ".cache" / "quarry" / "buf")


def _native_binary(prefix: Path) -> Path | None:
    """The platform package's binary under ``prefix`` (npm installs only the matching one)."""
    name = "buf.exe" if sys.platform == "win32" else "buf"
    for candidate in sorted((prefix / "node_modules" / "@bufbuild").glob(f"buf-*/bin/{name}")):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def _version_of(binary: Path) -> str:
    try:
        done = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BufUnavailable(f"{binary} --version failed: {exc}") from exc
    return (done.stdout or done.stderr).strip()


def _install(target: Path, timeout: float) -> None:
    npm = shutil.which("npm")
    if npm is None:
        raise BufUnavailable(f"npm is not installed (needed once to install @bufbuild/buf@{BUF_VERSION})")
    staging = target.with_name(target.name + f".tmp{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    command = [
        npm,
        "install",
        "--prefix",
        str(staging),
        "--no-audit",
        "--no-fund",
        "--ignore-scripts",
        "--loglevel=error",
        f"@bufbuild/buf@{BUF_VERSION}",
    ]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise BufUnavailable(f"npm install @bufbuild/buf@{BUF_VERSION} took over {timeout:.0f} s") from exc
    if done.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        raise BufUnavailable(
            f"npm install @bufbuild/buf@{BUF_VERSION} failed (exit {done.returncode}):\n"
            f"{(done.stdout + done.stderr)[-4000:]}"
        )
    if _native_binary(staging) is None:
        shutil.rmtree(staging, ignore_errors=True)
        raise BufUnavailable(
            f"npm installed @bufbuild/buf@{BUF_VERSION} but no buf binary for this platform "
            f"({sys.platform}); is the platform package supported?"
        )
    try:
        staging.rename(target)
    except OSError:  # another process installed the same version first: use theirs
        shutil.rmtree(staging, ignore_errors=True)


def buf_binary(timeout: float = NPM_TIMEOUT_S) -> Path:
    """The pinned buf (installed into the cache on first use); raises ``BufUnavailable``."""
    override = os.environ.get("QUARRY_BUF")
    if override:
        path = Path(override)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise BufUnavailable(f"QUARRY_BUF={override} is not an executable file")
        return path
    target = cache_root() / BUF_VERSION
    binary = _native_binary(target)
    if binary is None:
        _install(target, timeout)
        binary = _native_binary(target)
        if binary is None:
            raise BufUnavailable(f"no buf binary under {target} after installing it")
    version = _version_of(binary)
    if version != BUF_VERSION:
        raise BufUnavailable(f"{binary} reports version {version!r}, expected {BUF_VERSION}")
    return binary


if __name__ == "__main__":
    try:
        print(buf_binary())
    except BufUnavailable as exc:
        sys.exit(str(exc))
