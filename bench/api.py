"""The stack as processes and an HTTP client of its public API (the benchmarks' only way in)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from services.launcher import Stack

API_KEY = "qk-bench"
#: Ingest workers poll for jobs this often; the default (1 s) would add up to 1 s to every sync.
#: The load generator is one API key sending far past one key's rate limit (cache hits run near
#: 900 req/s): the limit is off, so the figures are the stack's, not the limiter's.
BENCH_ENV = {"QUARRY_INGEST_POLL_INTERVAL": "0.2", "QUARRY_GATEWAY_ADMISSION__RATE_PER_KEY": "0"}


@contextlib.contextmanager
def running_stack(data_dir: Path, env: Mapping[str, str] | None = None, timeout: float = 180) -> Iterator[Stack]:
    """A stack on free ports with its logs in ``data_dir/stack.log``; stopped on exit."""
    data_dir.mkdir(parents=True, exist_ok=True)
    stack = Stack(data_dir=data_dir, port=0, api_key=API_KEY, log_file=data_dir / "stack.log",
                  env={**BENCH_ENV, **(env or {})})
    try:
        stack.start(timeout=timeout)
    except Exception:
        log = data_dir / "stack.log"
        if log.exists():
            print(log.read_text()[-4000:])
        raise
    try:
        yield stack
    finally:
        stack.stop()


def rss_mb(stack: Stack) -> dict[str, float]:
    """Resident memory (MiB) of each process of the stack, from /proc (Linux)."""
    out = {}
    for proc in stack.processes:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{proc.popen.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    out[proc.name] = round(int(line.split()[1]) / 1024, 1)
    return out


class ApiError(RuntimeError):
    pass


@dataclass
class Timed:
    """One request: wall seconds, HTTP status, and the response's own stage latencies."""

    seconds: float
    status: int
    body: dict[str, Any] = field(default_factory=dict)


class QuarryClient:
    """Async client of the gateway's public API (what an SDK does, with timings kept)."""

    def __init__(self, base_url: str, api_key: str = API_KEY, *, connections: int = 64, timeout: float = 60) -> None:
        self.http = httpx.AsyncClient(
            base_url=base_url, headers={"Authorization": f"Bearer {api_key}"}, timeout=timeout,
            limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
        )

    async def __aenter__(self) -> QuarryClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.http.aclose()

    async def call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = await self.http.request(method, path, **kwargs)
        if response.status_code >= 400:
            raise ApiError(f"{method} {path} -> {response.status_code}: {response.text[:500]}")
        return response.json() if response.content else None

    async def timed(self, path: str, body: Mapping[str, Any]) -> Timed:
        """POST ``body`` to ``path``; errors are recorded (status), not raised."""
        t0 = time.perf_counter()
        try:
            response = await self.http.post(path, json=body)
        except httpx.HTTPError:
            return Timed(time.perf_counter() - t0, 599)
        seconds = time.perf_counter() - t0
        ok = response.status_code < 400
        return Timed(seconds, response.status_code, response.json() if ok and response.content else {})

    # -- ingestion, as a user does it: directory, uploads, index, sync ---------------------------

    async def create_directory(self, name: str) -> str:
        return str((await self.call("POST", "/api/v1/beta/directories", json={"name": name}))["id"])

    async def upload(self, directory_id: str, files: Iterable[tuple[str, str]], parallel: int = 4) -> int:
        """Upload (name, text) pairs, ``parallel`` at a time; returns how many were uploaded."""
        queue: asyncio.Queue[tuple[str, str] | None] = asyncio.Queue(maxsize=parallel * 4)
        count = 0

        async def worker() -> None:
            nonlocal count
            while (item := await queue.get()) is not None:
                name, text = item
                await self.call("POST", f"/api/v1/beta/directories/{directory_id}/files/upload",
                                files={"upload_file": (name, text.encode(), "text/plain")},
                                data={"display_name": name})
                count += 1

        tasks = [asyncio.create_task(worker()) for _ in range(parallel)]
        try:
            for item in files:
                await queue.put(item)
            for _ in tasks:
                await queue.put(None)
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
        return count

    async def create_index(self, directory_id: str, name: str) -> str:
        index = await self.call("POST", "/api/v1/indexes", json={"source_directory_id": directory_id, "name": name})
        return str(index["id"])

    async def sync(self, index_id: str, timeout: float = 7200) -> float:
        """Start a sync and wait for it; returns the seconds from the request to success."""
        t0 = time.perf_counter()
        await self.call("POST", f"/api/v1/indexes/{index_id}/sync")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            index = await self.call("GET", f"/api/v1/indexes/{index_id}", params={"expand": "sync_in_progress"})
            status = index.get("sync_status")
            if status == "succeeded" and not index.get("sync_in_progress"):
                return time.perf_counter() - t0
            if status in ("failed", "cancelled"):
                raise ApiError(f"sync {status}: {json.dumps(index.get('sync_progress'))}")
            await asyncio.sleep(0.2)
        raise ApiError("sync did not finish in time")

    async def ingest(self, name: str, files: Iterable[tuple[str, str]]) -> tuple[str, dict[str, float]]:
        """Directory + uploads + index + sync; returns the index id and the seconds of each step."""
        t0 = time.perf_counter()
        directory = await self.create_directory(name)
        count = await self.upload(directory, files)
        uploaded = time.perf_counter() - t0
        index = await self.create_index(directory, name)
        synced = await self.sync(index)
        return index, {"files": count, "upload_seconds": uploaded, "sync_seconds": synced}

    async def index_by_name(self, name: str) -> dict[str, Any] | None:
        """The index called ``name`` (with its last sync's status), or None."""
        params: dict[str, Any] = {"page_size": 100}
        while True:
            page = await self.call("GET", "/api/v1/indexes", params=params)
            for item in page["items"]:
                if item["name"] == name:
                    return await self.call(  # type: ignore[no-any-return]
                        "GET", f"/api/v1/indexes/{item['id']}", params={"expand": "sync_in_progress"})
            params["page_token"] = page.get("next_page_token")
            if not params["page_token"]:
                return None

    async def retrieve(self, index_id: str, query: str, **fields: Any) -> Timed:
        return await self.timed("/api/v1/retrieval/retrieve", {"index_id": index_id, "query": query, **fields})

    async def find(self, index_id: str, **fields: Any) -> list[dict[str, Any]]:
        """Every file of the index (follows pages)."""
        items: list[dict[str, Any]] = []
        token = None
        while True:
            page = await self.call("POST", "/api/v1/retrieval/files/find",
                                   json={"index_id": index_id, "page_size": 500, "page_token": token, **fields})
            items.extend(page["items"])
            token = page.get("next_page_token")
            if not token:
                return items
