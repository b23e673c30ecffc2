"""A single-node OpenSearch for the tests, built from Maven Central modules and run with ``java -cp``.

Standard library only, so that ``scripts/test-servers`` can run it before any virtualenv exists.

``build()`` resolves the classpath of ``pom.xml`` once (``mvn dependency:build-classpath``) and
compiles ``TestNode.java`` against it, into a cache directory keyed by the hash of both files
(``$QUARRY_OPENSEARCH_CACHE``, default ``~/.cache/quarry/opensearch``): later starts run no Maven
at all. ``OpenSearchNode`` starts the node on a home directory (data and logs inside it), waits
until the cluster is yellow, and stops it with SIGTERM (a clean close) or SIGKILL; ``restart``
starts it again on the same data.

    python -m tests.opensearch.node build
    python -m tests.opensearch.node start --data-dir D [--port 9250] [--heap 512m] --pidfile F
    python -m tests.opensearch.node stop --pidfile F
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

HERE = Path(__file__).resolve().parent
SOURCES = (HERE / "pom.xml", HERE / "src" / "main" / "java" / "dev" / "quarry" / "opensearch" / "TestNode.java")
MAIN_CLASS = "dev.quarry.opensearch.TestNode"
_HTTP_LINE = "QUARRY_OPENSEARCH_HTTP="

#: JVM flags: a small fixed heap (the stack and the tests share 2 cores and the memory), warnings
#: only, no JMX for log4j, and the defaults OpenSearch's own jvm.options sets that matter here.
JVM_FLAGS = (
    "-XX:+UseG1GC",
    "-XX:-OmitStackTraceInFastThrow",
    "-Dfile.encoding=UTF-8",
    "-Djava.awt.headless=true",
    "-Dlog4j2.disable.jmx=true",
    "-Dlog4j.shutdownHookEnabled=false",
    "-Dorg.apache.logging.log4j.level=WARN",
    "-Dopensearch.networkaddress.cache.ttl=60",
    "-Dio.netty.allocator.numDirectArenas=0",
    "-Dio.netty.noUnsafe=true",
)


class NodeError(RuntimeError):
    """The node could not be built or did not come up; the message says why."""


def cache_root() -> Path:
    return Path(os.environ.get("QUARRY_OPENSEARCH_CACHE") or Path.home() / ".cache" / "quarry" / "opensearch")


def _fingerprint() -> str:
    digest = hashlib.sha256()
    for source in SOURCES:
        digest.update(source.read_bytes())
    return digest.hexdigest()[:16]


def _run(command: list[str], what: str, timeout: float) -> str:
    try:
        done = subprocess.run(command, cwd=HERE, capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError as exc:
        raise NodeError(f"{what}: {command[0]} is not installed") from exc
    except subprocess.TimeoutExpired as exc:
        raise NodeError(f"{what} took over {timeout:.0f} s") from exc
    if done.returncode != 0:
        raise NodeError(f"{what} failed (exit {done.returncode}):\n{(done.stdout + done.stderr)[-4000:]}")
    return done.stdout


def build(timeout: float = 900) -> Path:
    """The directory holding ``classpath.txt`` and ``classes/`` for the current sources (built if absent)."""
    target = cache_root() / _fingerprint()
    if (target / "ready").exists():
        return target
    staging = target.with_name(target.name + f".tmp{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "classes").mkdir(parents=True)
    classpath_file = staging / "classpath.txt"
    _run(["mvn", "-q", "-B", "dependency:build-classpath", f"-Dmdep.outputFile={classpath_file}"],
         "resolving the OpenSearch classpath with Maven", timeout)
    _run(["javac", "--release", "17", "-d", str(staging / "classes"), "-cp", classpath_file.read_text().strip(),
          str(SOURCES[1])], "compiling TestNode.java", timeout)
    (staging / "ready").touch()
    try:
        staging.rename(target)
    except OSError:  # another process built the same fingerprint first: use theirs
        shutil.rmtree(staging, ignore_errors=True)
    return target


def java_available() -> bool:
    """Whether this machine can build and run the node (a JDK and Maven on PATH)."""
    return all(shutil.which(tool) for tool in ("java", "javac", "mvn"))


class OpenSearchNode:
    """One node process on ``home`` (``home/data``, ``home/logs``, its output in ``home/node.log``)."""

    def __init__(self, home: Path, *, port: int = 0, heap: str = "512m", cluster_name: str = "quarry-test",
                 settings: Mapping[str, str] | None = None) -> None:
        self.home = Path(home).resolve()
        self.port = port
        self.heap = heap
        self.cluster_name = cluster_name
        #: Node settings beyond TestNode's defaults (``thread_pool.write.queue_size``, ...).
        self.settings = dict(settings or {})
        self.process: subprocess.Popen[bytes] | None = None
        self.http_port = 0

    @property
    def url(self) -> str:
        if not self.http_port:
            raise NodeError("the node is not running")
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def log_path(self) -> Path:
        return self.home / "node.log"

    def command(self) -> list[str]:
        built = build()
        classpath = f"{built / 'classes'}{os.pathsep}{(built / 'classpath.txt').read_text().strip()}"
        return ["java", f"-Xms{self.heap}", f"-Xmx{self.heap}", *JVM_FLAGS,
                f"-Djava.io.tmpdir={self.home / 'tmp'}", "-cp", classpath, MAIN_CLASS,
                str(self.home), str(self.port), self.cluster_name,
                *(f"{key}={value}" for key, value in self.settings.items())]

    def start(self, timeout: float = 120, *, detach: bool = False) -> OpenSearchNode:
        """Start the node and wait until it answers and the cluster is at least yellow.

        ``detach``: the node outlives this Python process (its own session, for CI scripts).
        """
        if self.process is not None and self.process.poll() is None:
            raise NodeError("the node is already running")
        command = self.command()
        (self.home / "tmp").mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            start_new_session=detach)
        started = self.log_path.stat().st_size if self.log_path.exists() else 0
        try:
            self._wait_ready(timeout, started)
        except BaseException:
            self.kill()
            raise
        return self

    def _wait_ready(self, timeout: float, log_offset: int) -> None:
        deadline = time.monotonic() + timeout
        assert self.process is not None
        self.http_port = 0
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise NodeError(f"OpenSearch exited with code {self.process.returncode}:\n{self.log_tail()}")
            if not self.http_port:
                self.http_port = self._bound_port(log_offset)
            if self.http_port and self._healthy():
                return
            time.sleep(0.25)
        raise NodeError(f"OpenSearch did not become ready within {timeout:.0f} s:\n{self.log_tail()}")

    def _bound_port(self, log_offset: int) -> int:
        with self.log_path.open("rb") as log:
            log.seek(log_offset)
            for line in log.read().decode(errors="replace").splitlines():
                if line.startswith(_HTTP_LINE):
                    return int(line.rsplit(":", 1)[1])
        return 0

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/_cluster/health?wait_for_status=yellow&timeout=1s",
                                        timeout=3) as response:
                return bool(response.status == 200)
        except OSError:  # refused, reset, timed out, or an HTTP error status (408 while not yellow)
            return False

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    def stop(self, timeout: float = 60) -> None:
        """SIGTERM (the node closes its shards cleanly) and wait; SIGKILL if it outlives ``timeout``."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def kill(self) -> None:
        """SIGKILL: the node gets no chance to flush (what a crash or an OOM kill does)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None

    def pause(self) -> None:
        """SIGSTOP: the node holds its connections but answers nothing (a hung JVM, a long GC)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after ``pause``."""
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def restart(self, timeout: float = 120) -> OpenSearchNode:
        """Stop and start again on the same data directory and HTTP port."""
        port, self.port = self.port, self.http_port or self.port
        self.stop()
        try:
            return self.start(timeout)
        finally:
            self.port = port

    def __enter__(self) -> OpenSearchNode:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


def _main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.opensearch.node")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("build", help="resolve and compile (cached)")
    start = commands.add_parser("start", help="start a detached node and wait until it is ready")
    start.add_argument("--data-dir", type=Path, required=True)
    start.add_argument("--port", type=int, default=9250)
    start.add_argument("--heap", default="512m")
    start.add_argument("--pidfile", type=Path, required=True)
    start.add_argument("--timeout", type=float, default=180)
    stop = commands.add_parser("stop", help="stop the node of a pidfile")
    stop.add_argument("--pidfile", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            print(build())
        elif args.command == "start":
            node = OpenSearchNode(args.data_dir, port=args.port, heap=args.heap).start(args.timeout, detach=True)
            assert node.process is not None
            args.pidfile.write_text(str(node.process.pid))
            print(node.url)
        else:
            _stop_pid(args.pidfile)
    except NodeError as exc:
        print(f"opensearch node: {exc}", file=sys.stderr)
        return 1
    return 0


def _stop_pid(pidfile: Path, timeout: float = 60) -> None:
    if not pidfile.exists():
        return
    pid = int(pidfile.read_text())
    try:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            os.kill(pid, 0)
            time.sleep(0.2)
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    pidfile.unlink(missing_ok=True)


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
