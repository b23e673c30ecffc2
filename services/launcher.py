"""Start the whole stack as separate processes on one machine (``quarry up``, the e2e tests).

Before anything starts, every fixed port is checked: a port another process holds is reported
with that process (and whether it is another Quarry), instead of a stack that half starts.
Each service binds a free port (port 0) and writes it to a port file; the launcher waits for
each one's gRPC health to be SERVING before starting what depends on it, then the ingest
worker and the gateway. Every process gets the stack's service credential (a token generated
at start) unless the caller configured one.

A supervisor thread restarts a process that dies, on the port it had (its clients keep their
addresses), after a backoff that doubles from ``RESTART_BACKOFF`` up to ``MAX_BACKOFF`` and
starts over once a process has stayed up for ``STABLE_SECONDS``. ``CRASH_LOOP_RESTARTS``
restarts within ``CRASH_LOOP_WINDOW`` seconds is a crash loop: reported on every restart (it is
never hidden), while the supervisor keeps trying at the longest backoff. Stopping sends SIGTERM
in reverse order and waits for each process.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import httpx
import psutil
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services._proto.quarry.files.v1 import files_pb2, files_pb2_grpc

BACKENDS = ("files", "dense", "sparse", "rerank")
DEFAULT_PROJECT = "Default"

RESTART_BACKOFF = 0.5
MAX_BACKOFF = 30.0
STABLE_SECONDS = 60.0
CRASH_LOOP_RESTARTS = 5
CRASH_LOOP_WINDOW = 120.0

log = logging.getLogger("quarry.launcher")


class StackError(RuntimeError):
    pass


@dataclass
class Process:
    """One child: what it runs and with which environment, so the supervisor can start it again."""

    name: str
    popen: subprocess.Popen[bytes]
    port: int = 0
    module: str = ""
    env: Mapping[str, str] = field(default_factory=dict)
    restarts: list[float] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    #: When a dead process is due to be started again (0: it is running or not yet seen dead).
    due: float = 0.0

    def crash_looping(self, now: float) -> bool:
        return sum(1 for t in self.restarts if now - t <= CRASH_LOOP_WINDOW) >= CRASH_LOOP_RESTARTS


def port_holder(host: str, port: int) -> str | None:
    """Who listens on ``host:port``: ``None`` when the port is free, else a description of the
    holder (another Quarry gateway, or the process and its command line when it can be seen)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
            return None
        except OSError:
            pass
    owner = "another process"
    with contextlib.suppress(psutil.Error, OSError):
        for conn in psutil.net_connections(kind="tcp"):
            if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN and conn.pid:
                proc = psutil.Process(conn.pid)
                owner = f"pid {conn.pid} ({' '.join(proc.cmdline())[:160] or proc.name()})"
                break
    with contextlib.suppress(httpx.HTTPError, ValueError):
        spec = httpx.get(f"http://{host}:{port}/openapi.json", timeout=1.0).json()
        if spec.get("info", {}).get("title") == "Quarry":
            return f"another Quarry stack ({owner})"
    return owner


_PORT_OPTIONS = {"gateway": " (--port)", "gateway's gRPC API": " (--grpc-port)"}


@dataclass
class Stack:
    """A running stack. ``start`` returns once the gateway answers /readyz."""

    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 8000
    #: The gateway's public gRPC port (``quarry.retrieval.v1.Retrieval``); 0: a free port.
    grpc_port: int = 0
    api_key: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    log_format: str = "text"
    log_file: Path | None = None
    #: Restart processes that die (``quarry up`` and the fault tests); off: a death stays dead.
    supervise: bool = True
    #: Called with each supervision event (a restart, a crash loop); default: the log.
    notify: Callable[[str], None] | None = None
    processes: list[Process] = field(default_factory=list)
    addresses: dict[str, str] = field(default_factory=dict)
    #: Each gRPC process serves Prometheus metrics on a port of its own (``metrics_urls``).
    metrics: bool = True
    metrics_ports: dict[str, int] = field(default_factory=dict)
    #: The service credential of this stack: generated at start, handed to every process, never
    #: written to disk (a restart generates a new one).
    service_token: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    events: list[str] = field(default_factory=list)
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False)
    _stopping: threading.Event = field(default_factory=threading.Event, repr=False)
    _supervisor: threading.Thread | None = field(default=None, repr=False)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def grpc_address(self) -> str:
        """Where the gateway serves the public gRPC API."""
        return f"{self.host}:{self.grpc_port}"

    def _env(self, name: str, extra: Mapping[str, str]) -> dict[str, str]:
        env = {**os.environ, **self.env, **extra}
        prefix = f"QUARRY_{name.upper()}_"
        env.setdefault(f"{prefix}LOG_FORMAT", self.log_format)
        # Every process gets the stack's token unless the caller configured a credential itself.
        if not any(k.startswith(f"{prefix}SERVICE_AUTH__") for k in env):
            env[f"{prefix}SERVICE_AUTH__TOKEN"] = self.service_token
        if name == "gateway" and env.get("QUARRY_RERANK_BACKEND", "late_interaction") != "late_interaction":
            # A cross-encoder or an HTTP reranker was chosen for the stack: it scores every window
            # (the stored token vectors serve the default late-interaction reranker only).
            env.setdefault("QUARRY_GATEWAY_DEFAULTS__RERANK_SOURCE", "model")
        return env

    @property
    def metrics_urls(self) -> dict[str, str]:
        """``/metrics`` of every process by name (the gateway's on its HTTP port)."""
        urls = {name: f"http://127.0.0.1:{port}/metrics" for name, port in self.metrics_ports.items()}
        return {**urls, "gateway": f"{self.base_url}/metrics"}

    @property
    def call_metadata(self) -> list[tuple[str, str]]:
        """Metadata carrying the stack's service credential (for calls to its services)."""
        return [("authorization", f"Bearer {self.service_token}")]

    def _popen(self, module: str, env: Mapping[str, str]) -> subprocess.Popen[bytes]:
        # The child gets its own copy of the log file's descriptor; ours is closed at once.
        with open(self.log_file, "ab") if self.log_file else contextlib.nullcontext() as out:
            return subprocess.Popen(
                [sys.executable, "-m", module],
                env=dict(env),
                stdout=out,
                stderr=subprocess.STDOUT if out else None,
                start_new_session=True,  # Ctrl-C reaches the launcher only; it stops children in order
            )

    def _spawn(self, name: str, module: str, extra: Mapping[str, str]) -> Process:
        env = self._env(name, extra)
        proc = Process(name, self._popen(module, env), module=module, env=env)
        with self._lock:
            self.processes.append(proc)
        return proc

    def _start_service(self, name: str, extra: Mapping[str, str]) -> Process:
        """``python -m services.<name>`` on a free port (unless ``env`` fixes one), reported in a port file."""
        port_file = self.data_dir / "run" / f"{name}.port"
        port_file.unlink(missing_ok=True)
        prefix = f"QUARRY_{name.upper()}_"
        metrics = {}
        if self.metrics:
            port = int(self.env.get(f"{prefix}METRICS_PORT") or _free_port("127.0.0.1"))
            self.metrics_ports[name if name not in self.metrics_ports else f"{name}-{len(self.processes)}"] = port
            metrics[f"{prefix}METRICS_PORT"] = str(port)
        return self._spawn(name, f"services.{name}", {
            f"{prefix}HOST": "127.0.0.1",
            f"{prefix}PORT": self.env.get(f"{prefix}PORT", "0"),
            f"{prefix}PORT_FILE": str(port_file),
            **metrics,
            **extra,
        })

    def _wait_port(self, proc: Process, deadline: float) -> None:
        port_file = self.data_dir / "run" / f"{proc.name}.port"
        while time.monotonic() < deadline:
            if proc.popen.poll() is not None:
                raise StackError(f"{proc.name} exited with code {proc.popen.returncode} during start-up"
                                 f"{self._log_tail()}")
            if port_file.exists():
                proc.port = int(port_file.read_text())
                self.addresses[proc.name] = f"127.0.0.1:{proc.port}"
                # From now on it keeps this port: a restart binds it again.
                proc.env = {**proc.env, f"QUARRY_{proc.name.upper()}_PORT": str(proc.port)}
                return
            time.sleep(0.05)
        raise StackError(f"{proc.name} did not bind a port in time")

    def _wait_serving(self, proc: Process, deadline: float) -> None:
        with grpc.insecure_channel(self.addresses[proc.name]) as ch:
            stub = health_pb2_grpc.HealthStub(ch)
            while time.monotonic() < deadline:
                if proc.popen.poll() is not None:
                    raise StackError(f"{proc.name} exited with code {proc.popen.returncode} during start-up"
                                     f"{self._log_tail()}")
                try:
                    status = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0).status
                    if status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
                time.sleep(0.1)
        raise StackError(f"{proc.name} did not become healthy in time")

    def check_ports(self) -> None:
        """Every fixed port must be free before anything starts; say which is taken and by what."""
        wanted = [("gateway", self.host, self.port)] if self.port else []
        if self.grpc_port:
            wanted.append(("gateway's gRPC API", self.host, self.grpc_port))
        for name in (*BACKENDS, "ingest"):
            fixed = self.env.get(f"QUARRY_{name.upper()}_PORT", "0")
            if fixed.isdigit() and int(fixed):
                wanted.append((name, "127.0.0.1", int(fixed)))
        for name, host, port in wanted:
            holder = port_holder(host, port)
            if holder:
                raise StackError(f"port {port} on {host} (for the {name}) is taken by {holder}; stop it or choose "
                                 f"another port{_PORT_OPTIONS.get(name, '')}")

    def start(self, timeout: float = 120.0) -> None:
        self.check_ports()
        deadline = time.monotonic() + timeout
        (self.data_dir / "run").mkdir(parents=True, exist_ok=True)
        self._stopping.clear()
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
            if self.grpc_port == 0:
                self.grpc_port = _free_port(self.host)
            gateway = self._spawn("gateway", "gateway", {
                "QUARRY_GATEWAY_HOST": self.host,
                "QUARRY_GATEWAY_PORT": str(self.port),
                "QUARRY_GATEWAY_GRPC_PORT": str(self.grpc_port),
                **{f"QUARRY_GATEWAY_{n.upper()}_ADDR": self.addresses[n] for n in BACKENDS},
            })
            self._wait_gateway(gateway, deadline)
        except BaseException:
            self.stop()
            raise
        if self.supervise:
            self._supervisor = threading.Thread(target=self._supervise, name="quarry-supervisor", daemon=True)
            self._supervisor.start()

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
                raise StackError(f"gateway exited with code {proc.popen.returncode} during start-up"
                                 f"{self._log_tail()}")
            try:
                if httpx.get(f"{self.base_url}/readyz", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise StackError("gateway did not become ready in time")

    def _log_tail(self, lines: int = 15) -> str:
        if not self.log_file or not self.log_file.exists():
            return " (its output is above)"
        tail = self.log_file.read_text(errors="replace").splitlines()[-lines:]
        return ":\n" + "\n".join(tail)

    def ensure_api_key(self) -> str:
        """The "Default" project exists and ``api_key`` (or a stored/generated key) opens it."""
        key_file = self.data_dir / "api_key"
        wanted = self.api_key or (key_file.read_text().strip() if key_file.exists() else "")
        with grpc.insecure_channel(self.addresses["files"]) as ch:
            stub = files_pb2_grpc.FilesStub(ch)
            project = stub.EnsureProject(files_pb2.EnsureProjectRequest(name=DEFAULT_PROJECT), timeout=10,
                                         metadata=self.call_metadata)
            key = stub.CreateApiKey(
                # The local stack's key is its administrator's: it may call /api/v1/admin too.
                files_pb2.CreateApiKeyRequest(project_id=project.id, api_key=wanted, name="quarry up", is_admin=True),
                timeout=10,
                metadata=self.call_metadata,
            ).api_key
        if not self.api_key:
            key_file.write_text(key)
            key_file.chmod(0o600)
        self.api_key = key
        return key

    # -- supervision ------------------------------------------------------------------------------

    def _event(self, message: str) -> None:
        self.events.append(message)
        (self.notify or log.warning)(message)

    def _supervise(self) -> None:
        while not self._stopping.wait(0.2):
            with self._lock:
                for proc in list(self.processes):
                    self._check(proc)

    def _check(self, proc: Process) -> None:
        now = time.monotonic()
        code = proc.popen.poll()
        if code is None:
            if proc.restarts and now - proc.started > STABLE_SECONDS:
                proc.restarts.clear()  # stayed up: the next crash starts the backoff over
            return
        if proc.due == 0.0:
            recent = [t for t in proc.restarts if now - t <= CRASH_LOOP_WINDOW]
            backoff = min(MAX_BACKOFF, RESTART_BACKOFF * 2 ** len(recent))
            proc.due = now + backoff
            looping = proc.crash_looping(now)
            loop = f" (crash loop: restarted {len(recent)} times in {CRASH_LOOP_WINDOW:.0f} s)" if looping else ""
            self._event(f"{proc.name} exited with code {code}; restarting in {backoff:.1f} s{loop}")
            return
        if now < proc.due or self._stopping.is_set():
            return
        proc.popen = self._popen(proc.module, proc.env)
        proc.restarts.append(now)
        proc.started = now
        proc.due = 0.0
        self._event(f"{proc.name} restarted (pid {proc.popen.pid})")

    def crash_looping(self) -> list[str]:
        """The processes in a crash loop now."""
        now = time.monotonic()
        with self._lock:
            return [p.name for p in self.processes if p.crash_looping(now)]

    # -- stopping and fault injection -------------------------------------------------------------

    def stop(self, grace: float = 15.0) -> None:
        """SIGTERM every process, newest first, and wait; SIGKILL what outlives the grace."""
        self._stopping.set()
        if self._supervisor is not None and self._supervisor is not threading.current_thread():
            self._supervisor.join(timeout=5)
            self._supervisor = None
        with self._lock:
            for proc in reversed(self.processes):
                if proc.popen.poll() is None:
                    proc.popen.send_signal(signal.SIGCONT)  # a stopped process cannot handle SIGTERM
                    proc.popen.send_signal(signal.SIGTERM)
                    try:
                        proc.popen.wait(grace)
                    except subprocess.TimeoutExpired:
                        proc.popen.kill()
                        proc.popen.wait()
            self.processes.clear()

    def process(self, name: str) -> Process:
        with self._lock:
            return next(p for p in self.processes if p.name == name)

    def signal(self, name: str, sig: signal.Signals) -> None:
        """Send ``sig`` to a process (SIGKILL, SIGSTOP, SIGCONT): the supervisor restarts one that dies."""
        self.process(name).popen.send_signal(sig)

    def kill(self, name: str) -> None:
        """SIGKILL a process (no chance to clean up) and forget it: it is not restarted."""
        with self._lock:
            proc = self.process(name)
            proc.popen.kill()
            proc.popen.wait()
            self.processes.remove(proc)

    def failed(self) -> list[str]:
        """Processes that died since the start: not running now, or restarted by the supervisor."""
        with self._lock:
            return [p.name for p in self.processes if p.popen.poll() is not None or p.restarts]


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])
