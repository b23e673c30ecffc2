"""A Go client of the public gRPC API (``tests/grpc_clients/go``), generated from
protos/quarry/retrieval/v1/retrieval.proto and built for the tests.

``build_go_client()`` generates the Go code with protoc (``python -m grpc_tools.protoc``, the one in
the venv) and the pinned plugins (``go install``-ed once into the cache), honouring the proto's
``go_package`` (``quarry.dev/gen/go/...``, a module of its own that the client's go.mod replaces
with ``./gen``), and runs ``go build``; all in a staging copy under the cache directory
(``$QUARRY_GO_CACHE``, default ``~/.cache/quarry/go``), never in the work tree. The binary is kept
under a hash of everything it is made from (the proto, go.mod, go.sum, main.go, the plugin
versions, protoc's version), so later runs build nothing. ``run_go_client()`` sends it a batch of
RetrieveRequests and returns what it decoded (``main.go`` has the format).

Generated code is never committed. After changing go.mod's requirements, refresh go.sum with

    python -m tests.grpc_clients.go_client tidy     # go mod tidy in a staging copy, copied back
    python -m tests.grpc_clients.go_client build    # build (cached), print the binary's path

Standard library only (plus grpc_tools, run as a subprocess).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
PROTO_ROOT = ROOT / "protos"
PROTO = Path("quarry") / "retrieval" / "v1" / "retrieval.proto"  # relative to PROTO_ROOT
SOURCE_DIR = Path(__file__).resolve().parent / "go"
SOURCES = ("go.mod", "go.sum", "main.go")
#: The Go import path of the generated code's module (the prefix of the proto's go_package).
GEN_MODULE = "quarry.dev/gen/go"
#: protoc-gen-go comes from google.golang.org/protobuf at the version go.mod requires (generated
#: code and runtime move together); protoc-gen-go-grpc is a module of its own.
PROTOC_GEN_GO_GRPC_VERSION = "v1.6.2"
BINARY_NAME = "grpcclient.exe" if sys.platform == "win32" else "grpcclient"

GO_TIMEOUT_S = 600.0
PROTOC_TIMEOUT_S = 120.0


class GoUnavailable(RuntimeError):
    """No Go toolchain to build the client with; the message says why."""


class GoClientError(RuntimeError):
    """Building or running the client failed; the message has the tool's output."""


def cache_root() -> Path:
    return Path(os.environ.get("QUARRY_GO_CACHE") or Path.home() / ".cache" / "quarry" / "go")


def go_binary() -> Path:
    """``go`` from PATH, else the standard install locations; raises ``GoUnavailable``."""
    found = shutil.which("go")
    candidates = [Path(found)] if found else []
    if os.environ.get("GOROOT"):
        candidates.append(Path(os.environ["GOROOT"]) / "bin" / "go")
    candidates.append(Path("/usr/local/go/bin/go"))
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise GoUnavailable("no Go toolchain (go is not on PATH, nor in $GOROOT/bin or /usr/local/go/bin)")


def _go_env() -> dict[str, str]:
    env = dict(os.environ)
    # -mod=mod: the generated module's requirements are resolved at build time. GOTOOLCHAIN=local:
    # never download another Go toolchain. No cgo: a static binary, no C compiler needed.
    env.update(GOFLAGS="-mod=mod", GOTOOLCHAIN="local", CGO_ENABLED="0")
    return env


def _run(command: list[str], what: str, *, cwd: Path, timeout: float, env: dict[str, str] | None = None) -> str:
    try:
        done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError as exc:
        raise GoClientError(f"{what}: {command[0]} is not installed") from exc
    except subprocess.TimeoutExpired as exc:
        raise GoClientError(f"{what} took over {timeout:.0f} s") from exc
    if done.returncode != 0:
        raise GoClientError(f"{what} failed (exit {done.returncode}):\n{(done.stdout + done.stderr)[-4000:]}")
    return done.stdout


def _required_version(module: str) -> str:
    """The version go.mod requires of ``module``."""
    match = re.search(rf"^\s*(?:require\s+)?{re.escape(module)}\s+(v\S+)", (SOURCE_DIR / "go.mod").read_text(), re.M)
    if match is None:
        raise GoClientError(f"{SOURCE_DIR / 'go.mod'} does not require {module}")
    return match.group(1)


def _go_directive() -> str:
    match = re.search(r"^go\s+(\S+)", (SOURCE_DIR / "go.mod").read_text(), re.M)
    return match.group(1) if match else "1.24"


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version)[:3])


def _check_toolchain(go: Path) -> None:
    """``GoUnavailable`` when ``go`` is older than go.mod's ``go`` line (GOTOOLCHAIN=local: no
    newer toolchain is downloaded)."""
    env = {**_go_env(), "GOFLAGS": ""}
    installed = _run(
        [str(go), "env", "GOVERSION"], "go env GOVERSION", cwd=Path(tempfile.gettempdir()), timeout=60, env=env
    ).strip()
    if _version_tuple(installed.removeprefix("go")) < _version_tuple(_go_directive()):
        raise GoUnavailable(f"{go} is {installed}; tests/grpc_clients/go/go.mod needs go {_go_directive()} or newer")


def _plugins() -> dict[str, tuple[str, str]]:
    """Plugin name -> (the module path to ``go install``, its version)."""
    return {
        "protoc-gen-go": (
            "google.golang.org/protobuf/cmd/protoc-gen-go",
            _required_version("google.golang.org/protobuf"),
        ),
        "protoc-gen-go-grpc": ("google.golang.org/grpc/cmd/protoc-gen-go-grpc", PROTOC_GEN_GO_GRPC_VERSION),
    }


def _protoc_version() -> str:
    from importlib.metadata import version

    return version("grpcio-tools")


def _fingerprint() -> str:
    digest = hashlib.sha256()
    for path in [PROTO_ROOT / PROTO, *(SOURCE_DIR / name for name in SOURCES)]:
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    digest.update(json.dumps([_plugins(), _protoc_version(), GEN_MODULE]).encode())
    return digest.hexdigest()[:16]


def install_plugin(name: str, timeout: float = GO_TIMEOUT_S) -> Path:
    """The plugin ``name`` at its pinned version, ``go install``-ed once into the cache."""
    module, version = _plugins()[name]
    gobin = cache_root() / "bin" / f"{name}@{version}"
    binary = gobin / (name + (".exe" if sys.platform == "win32" else ""))
    if binary.is_file():
        return binary
    staging = gobin.with_name(gobin.name + f".tmp{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    env = _go_env()
    env["GOBIN"] = str(staging)
    env.pop("GOFLAGS")  # `go install pkg@version` ignores the current module; -mod would be rejected
    _run(
        [str(go_binary()), "install", f"{module}@{version}"],
        f"go install {module}@{version}",
        cwd=staging,
        timeout=timeout,
        env=env,
    )
    try:
        staging.rename(gobin)
    except OSError:  # another process installed it first
        shutil.rmtree(staging, ignore_errors=True)
    return binary


def _stage(staging: Path, timeout: float) -> None:
    """The client's sources and the generated module in ``staging``, ready for ``go build``."""
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for name in SOURCES:
        shutil.copy2(SOURCE_DIR / name, staging / name)
    gen = staging / "gen"
    gen.mkdir()
    plugins = {name: install_plugin(name, timeout) for name in _plugins()}
    from grpc_tools import protoc  # type: ignore[import-untyped]

    include = Path(protoc.__file__).parent / "_proto"
    _run(
        [
            sys.executable, "-m", "grpc_tools.protoc",
            f"-I{PROTO_ROOT}", f"-I{include}",
            f"--plugin=protoc-gen-go={plugins['protoc-gen-go']}",
            f"--plugin=protoc-gen-go-grpc={plugins['protoc-gen-go-grpc']}",
            f"--go_out={gen}", f"--go_opt=module={GEN_MODULE}",
            f"--go-grpc_out={gen}", f"--go-grpc_opt=module={GEN_MODULE}",
            PROTO.as_posix(),
        ],
        "protoc (Go code from retrieval.proto)", cwd=ROOT, timeout=PROTOC_TIMEOUT_S,
    )  # fmt: skip
    (gen / "go.mod").write_text(
        f"module {GEN_MODULE}\n\ngo {_go_directive()}\n\nrequire (\n"
        f"\tgoogle.golang.org/grpc {_required_version('google.golang.org/grpc')}\n"
        f"\tgoogle.golang.org/protobuf {_required_version('google.golang.org/protobuf')}\n)\n"
    )


def build_go_client(timeout: float = GO_TIMEOUT_S) -> Path:
    """The client binary for the current proto and sources (generated and built if not cached);
    raises ``GoUnavailable`` without a Go toolchain, ``GoClientError`` when a step fails."""
    target = cache_root() / "client" / _fingerprint()
    binary = target / BINARY_NAME
    if binary.is_file():
        return binary
    go = go_binary()
    _check_toolchain(go)
    staging = target.with_name(target.name + f".tmp{os.getpid()}")
    try:
        _stage(staging / "src", timeout)
        _run(
            [str(go), "build", "-trimpath", "-o", str(staging / BINARY_NAME), "."],
            "go build (the Go client)",
            cwd=staging / "src",
            timeout=timeout,
            env=_go_env(),
        )
        try:
            staging.rename(target)
        except OSError:  # another process built the same fingerprint first: use theirs
            pass
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return binary


def tidy(timeout: float = GO_TIMEOUT_S) -> None:
    """``go mod tidy`` in a staging copy (with the generated module), go.mod and go.sum copied back."""
    go = go_binary()
    _check_toolchain(go)
    staging = cache_root() / f"tidy.tmp{os.getpid()}"
    try:
        _stage(staging, timeout)
        _run([str(go), "mod", "tidy"], "go mod tidy", cwd=staging, timeout=timeout, env=_go_env())
        for name in ("go.mod", "go.sum"):
            shutil.copy2(staging / name, SOURCE_DIR / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def run_go_client(
    binary: Path, address: str, api_key: str, requests: list[dict[str, Any]], timeout: float | None = None
) -> list[dict[str, Any]]:
    """Each request (a RetrieveRequest as proto JSON) sent with ``binary``; per request the
    RetrieveResponse as proto JSON (proto field names), or ``{"error": {"code", "message"}}``."""
    if timeout is None:
        timeout = 30.0 * len(requests) + 30.0  # the client's per-call deadline, plus start-up
    payload = json.dumps({"address": address, "api_key": api_key, "requests": requests})
    try:
        done = subprocess.run(
            [str(binary)], input=payload, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise GoClientError(f"the Go client took over {timeout:.0f} s") from exc
    if done.returncode != 0:
        raise GoClientError(f"the Go client failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
    responses = json.loads(done.stdout)
    if not isinstance(responses, list) or len(responses) != len(requests):
        raise GoClientError(f"the Go client answered {len(requests)} requests with: {done.stdout[:2000]}")
    return responses


if __name__ == "__main__":
    command = sys.argv[1] if len(sys.argv) > 1 else "build"
    try:
        if command == "tidy":
            tidy()
        elif command == "build":
            print(build_go_client())
        else:
            sys.exit(f"usage: python -m tests.grpc_clients.go_client [build|tidy]; not {command!r}")
    except (GoUnavailable, GoClientError) as exc:
        sys.exit(str(exc))
