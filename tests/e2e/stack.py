"""The stack as processes, one per e2e module (each module names its own API key)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from services.launcher import Stack


@contextmanager
def running_stack(data: Path, api_key: str, env: Mapping[str, str] | None = None) -> Iterator[Stack]:
    """Start every process on free ports (the ingest worker polling fast), stop them after;
    ``env`` adds settings (engine URLs, ...)."""
    s = Stack(data_dir=data, port=0, api_key=api_key, log_file=data / "stack.log",
              env={"QUARRY_INGEST_POLL_INTERVAL": "0.2", **(env or {})})
    try:
        s.start(timeout=180)
    except Exception:
        print((data / "stack.log").read_text()[-5000:])
        raise
    try:
        yield s
    finally:
        s.stop()
