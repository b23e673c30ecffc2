"""Start the whole stack as separate processes on one machine (``quarry up``, the e2e tests).

Each service binds a free port (port 0) and writes it to a port file; the launcher waits for
each one's gRPC health to be SERVING before starting what depends on it, then the ingest
worker and the gateway. Stopping sends SIGTERM in reverse order and waits for each process.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services._proto.quarry.files.v1 import files_pb2, files_pb2_grpc

BACKENDS = ("files", "dense", "sparse", "rerank")
DEFAULT_PROJECT = "Default"


class StackError(RuntimeError):
    pass


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    port: int = 0


@dataclass
class Stack:
    """A running stack. ``start`` returns once the gateway answers /readyz."""

    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    log_format: str = "text"
    log_file: Path | None = None
    processes: list[Process] = field(default_factory=list)
    addresses: dict[str, str] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _env(self, name: str, extra: Mapping[str, str]) -> dict[str, str]:
        env = {**os.environ, **self.env, **extra}
        prefix = f"QUARRY_{name.upper()}_"
        env.setdefault(f"{prefix}LOG_FORMAT", self.log_format)
        return env

    def _spawn(self, name: str, module: str, extra: Mapping[str, str]) -> Process:
        # The child gets its own copy of the log file's descriptor; ours is closed at once.
        with open(self.log_file, "ab") if self.log_file else contextlib.nullcontext() as out:
            popen = subprocess.Popen(
                [sys.executable, "-m", module],
                env=self._env(name, extra),
                stdout=out,
                stderr=subprocess.STDOUT if out else None,
                start_new_session=True,  # Ctrl-C reaches the launcher only; it stops children in order
            )
        proc = Process(name, popen)
        self.processes.append(proc)
        return proc

    def _start_service(self, name: str, extra: Mapping[str, str]) -> Process:
        """``python -m services.<name>`` on a free port (unless ``env`` fixes one), reported in a port file."""
        port_file = self.data_dir / "run" / f"{name}.port"
        port_file.unlink(missing_ok=True)
        prefix = f"QUARRY_{name.upper()}_"
        return self._spawn(name, f"services.{name}", {
            f"{prefix}HOST": "127.0.0.1",
            f"{prefix}PORT": self.env.get(f"{prefix}PORT", "0"),
            f"{prefix}PORT_FILE": str(port_file),
            **extra,
        })

    def _wait_port(self, proc: Process, deadline: float) -> None:
        port_file = self.data_dir / "run" / f"{proc.name}.port"
        while time.monotonic() < deadline:
            if proc.popen.poll() is not None:
                raise StackError(f"{proc.name} exited with code {proc.popen.returncode} during start-up")
            if port_file.exists():
                proc.port = int(port_file.read_text())
                self.addresses[proc.name] = f"127.0.0.1:{proc.port}"
                return
            time.sleep(0.05)
        raise StackError(f"{proc.name} did not bind a port in time")

    def _wait_serving(self, proc: Process, deadline: float) -> None:
        with grpc.insecure_channel(self.addresses[proc.name]) as ch:
            stub = health_pb2_grpc.HealthStub(ch)
            while time.monotonic() < deadline:
                if proc.popen.poll() is not None:
                    raise StackError(f"{proc.name} exited with code {proc.popen.returncode} during start-up")
                try:
                    status = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0).status
                    if status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
                time.sleep(0.1)
        raise StackError(f"{proc.name} did not become healthy in time")

    def start(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        (self.data_dir / "run").mkdir(parents=True, exist_ok=True)
        try:
            procs = [
                self._start_service(name, {f"QUARRY_{name.upper()}_DATA_DIR": str(self.data_dir / name)})
                for name in BACKENDS
            ]
            for proc in procs:
                self._wait_port(proc, deadline)
            for proc in procs:
                self._wait_serving(proc, deadline)
            self.start_ingest(deadline - time.monotonic())
            self.ensure_api_key()
            if self.port == 0:
                self.port = _free_port(self.host)
            gateway = self._spawn("gateway", "gateway", {
                "QUARRY_GATEWAY_HOST": self.host,
                "QUARRY_GATEWAY_PORT": str(self.port),
                **{f"QUARRY_GATEWAY_{n.upper()}_ADDR": self.addresses[n] for n in BACKENDS},
            })
            self._wait_gateway(gateway, deadline)
        except BaseException:
            self.stop()
            raise

    def start_ingest(self, timeout: float = 60.0) -> Process:
        """Start an ingest worker (at start-up, or another one later: workers share jobs by lease)."""
        ingest = self._start_service("ingest", {
            f"QUARRY_INGEST_{name.upper()}_ADDR": self.addresses[name] for name in ("files", "dense", "sparse")
        })
        self._wait_port(ingest, time.monotonic() + timeout)
        return ingest

    def _wait_gateway(self, proc: Process, deadline: float) -> None:
        while time.monotonic() < deadline:
            if proc.popen.poll() is not None:
                raise StackError(f"gateway exited with code {proc.popen.returncode} during start-up")
            try:
                if httpx.get(f"{self.base_url}/readyz", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise StackError("gateway did not become ready in time")

    def ensure_api_key(self) -> str:
        """The "Default" project exists and ``api_key`` (or a stored/generated key) opens it."""
        key_file = self.data_dir / "api_key"
        wanted = self.api_key or (key_file.read_text().strip() if key_file.exists() else "")
        with grpc.insecure_channel(self.addresses["files"]) as ch:
            stub = files_pb2_grpc.FilesStub(ch)
            project = stub.EnsureProject(files_pb2.EnsureProjectRequest(name=DEFAULT_PROJECT), timeout=10)
            key = stub.CreateApiKey(
                files_pb2.CreateApiKeyRequest(project_id=project.id, api_key=wanted), timeout=10
            ).api_key
        if not self.api_key:
            key_file.write_text(key)
            key_file.chmod(0o600)
        self.api_key = key
        return key

    def stop(self, grace: float = 15.0) -> None:
        """SIGTERM every process, newest first, and wait; SIGKILL what outlives the grace."""
        for proc in reversed(self.processes):
            if proc.popen.poll() is None:
                proc.popen.send_signal(signal.SIGTERM)
                try:
                    proc.popen.wait(grace)
                except subprocess.TimeoutExpired:
                    proc.popen.kill()
                    proc.popen.wait()
        self.processes.clear()

    def process(self, name: str) -> Process:
        return next(p for p in self.processes if p.name == name)

    def kill(self, name: str) -> None:
        """SIGKILL a process (no chance to clean up) and forget it; used by failure tests."""
        proc = self.process(name)
        proc.popen.kill()
        proc.popen.wait()
        self.processes.remove(proc)

    def failed(self) -> list[str]:
        return [p.name for p in self.processes if p.popen.poll() is not None]


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])
