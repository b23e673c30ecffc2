"""Faults under load: a closed-loop retrieve load while one process at a time is SIGKILLed (the
launcher's supervisor restarts it) or SIGSTOPped for a while (a hung process: its port still
accepts connections, nothing answers), through the public HTTP API.

Per case: requests, 2xx, degraded answers, errors by status, whether every 503 carried
``Retry-After``, and the recovery time: from the moment the process is back (serving again
after a restart, or resumed with SIGCONT) to the first request from which every answer is
normal (2xx, not degraded). Used by ``tests/e2e/test_faults.py`` (short) and
``quarry bench faults`` (the published figures).
"""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.launcher import Stack

FAULTS = ("kill", "stop")
TARGETS = ("dense", "sparse", "rerank", "files")


@dataclass(frozen=True)
class Sample:
    start: float
    end: float
    status: int
    degraded: bool
    retry_after: str | None


@dataclass
class Load:
    """``clients`` closed-loop clients in a thread of their own, each sending a new query (the
    response cache must never answer) until ``stop()``."""

    base_url: str
    api_key: str
    index_id: str
    clients: int = 4
    timeout: float = 30.0
    samples: list[Sample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Load:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), name="fault-load", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> list[Sample]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.timeout + 5)
        return list(self.samples)

    async def _run(self) -> None:
        headers = {"Authorization": f"Bearer {self.api_key}"}
        async with httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=self.timeout) as http:
            await asyncio.gather(*(self._client(http, n) for n in range(self.clients)))

    async def _client(self, http: httpx.AsyncClient, n: int) -> None:
        i = 0
        while not self._stop.is_set():
            i += 1
            body = {"index_id": self.index_id, "query": f"lighthouse storm keeper {n} {i} {time.monotonic_ns()}"}
            start = time.monotonic()
            try:
                response = await http.post("/api/v1/retrieval/retrieve", json=body)
                status = response.status_code
                degraded = status == 200 and bool(response.json().get("degraded"))
                retry_after = response.headers.get("retry-after")
            except httpx.HTTPError:
                status, degraded, retry_after = 599, False, None
            self.samples.append(Sample(start, time.monotonic(), status, degraded, retry_after))


def serving(stack: Stack, name: str, timeout: float = 60.0) -> float:
    """Wait until ``name`` answers its health check SERVING; returns when (monotonic)."""
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(stack.addresses[name]) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        while time.monotonic() < deadline:
            try:
                if stub.Check(health_pb2.HealthCheckRequest(), timeout=0.5).status == \
                        health_pb2.HealthCheckResponse.SERVING:
                    return time.monotonic()
            except grpc.RpcError:
                pass
            time.sleep(0.05)
    raise TimeoutError(f"{name} did not serve again within {timeout:.0f} s")


def summarize(samples: list[Sample], fault_at: float, back_at: float) -> dict[str, Any]:
    """The case's figures (see the module docstring); ``during`` counts requests sent while the
    process was down."""
    normal = [s.status == 200 and not s.degraded for s in samples]
    recovery = None
    for i, s in enumerate(samples):
        if s.start >= back_at and all(normal[i:]):
            recovery = max(0.0, s.start - back_at)
            break
    during = [s for s in samples if fault_at <= s.start < back_at]
    statuses = Counter(s.status for s in samples if s.status != 200)
    return {
        "requests": len(samples), "ok": sum(1 for s in samples if s.status == 200),
        "degraded": sum(1 for s in samples if s.degraded),
        "errors": sum(statuses.values()), "error_statuses": {str(k): v for k, v in sorted(statuses.items())},
        "unavailable_without_retry_after": sum(1 for s in samples if s.status == 503 and not s.retry_after),
        "during_fault": len(during), "recovery_s": recovery,
        "down_s": back_at - fault_at,
        "p50_ms_during_fault": _median_ms([s.end - s.start for s in during]),
    }


def _median_ms(values: list[float]) -> float | None:
    return sorted(values)[len(values) // 2] * 1000 if values else None


def run_case(stack: Stack, index_id: str, target: str, fault: str, *, stop_seconds: float = 10.0,
             before: float = 2.0, after: float = 8.0, clients: int = 4) -> dict[str, Any]:
    """One fault on one process under load; returns ``summarize``'s figures."""
    assert stack.api_key
    load = Load(stack.base_url, stack.api_key, index_id, clients).start()
    time.sleep(before)
    fault_at = time.monotonic()
    if fault == "kill":
        stack.signal(target, signal.SIGKILL)
        time.sleep(0.3)  # the supervisor notices the death, then restarts after its backoff
        back_at = serving(stack, target)
    else:
        stack.signal(target, signal.SIGSTOP)
        time.sleep(stop_seconds)
        stack.signal(target, signal.SIGCONT)
        back_at = time.monotonic()
    time.sleep(after)
    samples = load.stop()
    return {"target": target, "fault": fault, **summarize(samples, fault_at, back_at)}
