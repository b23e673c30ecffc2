"""The proto API checks: ``buf lint`` (STANDARD, protos/buf.yaml) and ``buf breaking`` (FILE) of
the public API against protos/baseline/retrieval-v1.binpb, and proof that the breaking check
bites: a copy of protos/ with a breaking edit to retrieval.proto must fail it, naming the field.

buf is the npm build pinned in ``tests.protoapi.buf`` (installed on first use). Without it the
tests skip with the reason; with ``CI=true`` they fail (as ``tests.servers.unavailable`` does).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import NoReturn

import pytest

from tests import servers
from tests.protoapi.buf import BufUnavailable, buf_binary

ROOT = Path(__file__).resolve().parents[2]
PROTOS = ROOT / "protos"
BASELINE = Path("baseline") / "retrieval-v1.binpb"  # relative to protos/
PUBLIC_PROTO = Path("quarry") / "retrieval" / "v1" / "retrieval.proto"
BUF_TIMEOUT_S = 120


def unavailable(reason: str) -> NoReturn:
    """Fail under CI, skip elsewhere (as ``tests.servers.unavailable`` does for the test servers)."""
    if servers.in_ci():
        pytest.fail(
            f"{reason} (CI=true: npm must be able to install @bufbuild/buf (tests/protoapi/buf.py))", pytrace=False
        )
    pytest.skip(reason)


@pytest.fixture(scope="module")
def buf() -> Path:
    try:
        return buf_binary()
    except BufUnavailable as exc:
        unavailable(f"buf is not available: {exc}")


def run_buf(buf: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(buf), *args], cwd=cwd, capture_output=True, text=True, timeout=BUF_TIMEOUT_S, check=False
    )


def breaking(buf: Path, protos: Path) -> subprocess.CompletedProcess[str]:
    """``buf breaking`` of the module at ``protos`` against its baseline, one JSON object a line.

    Imports (google/protobuf/struct.proto, which the image carries so that it resolves) are left
    out of the comparison: they are buf's, not ours, and may move with buf's version."""
    return run_buf(
        buf,
        "breaking",
        protos.name,
        "--against",
        str(Path(protos.name) / BASELINE),
        "--exclude-imports",
        "--error-format=json",
        cwd=protos.parent,
    )


def annotations(done: subprocess.CompletedProcess[str]) -> list[dict[str, object]]:
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


def test_lint(buf: Path) -> None:
    done = run_buf(buf, "lint", "protos", cwd=ROOT)
    assert done.returncode == 0, f"buf lint failed:\n{done.stdout}{done.stderr}"


def test_the_public_proto_breaks_only_the_two_chosen_rules(buf: Path, tmp_path: Path) -> None:
    """Without exceptions STANDARD flags exactly the two deliberate choices protos/buf.yaml excepts:
    the service is named Retrieval (as the API is named), and GetIndex returns the Index resource."""
    protos = tmp_path / "protos"
    shutil.copytree(PROTOS / "quarry" / "retrieval", protos / "quarry" / "retrieval")
    (protos / "buf.yaml").write_text("version: v2\nlint:\n  use:\n    - STANDARD\n")
    done = run_buf(buf, "lint", "protos", cwd=tmp_path)
    found = done.stdout.strip().splitlines()
    assert done.returncode != 0 and len(found) == 2, done.stdout
    assert 'Service name "Retrieval" should be suffixed with "Service"' in found[0], done.stdout
    assert 'RPC response type "Index" should be named "GetIndexResponse"' in found[1], done.stdout


def test_baseline_is_the_public_api() -> None:
    from google.protobuf import descriptor_pb2

    image = descriptor_pb2.FileDescriptorSet.FromString((PROTOS / BASELINE).read_bytes())
    names = {file.name for file in image.file}
    assert PUBLIC_PROTO.as_posix() in names
    assert not {name for name in names if name.startswith("quarry/") and name != PUBLIC_PROTO.as_posix()}


def test_no_breaking_change(buf: Path) -> None:
    done = breaking(buf, PROTOS)
    assert done.returncode == 0, (
        f"buf breaking found changes that break generated clients of the public API:\n{done.stdout}{done.stderr}\n"
        "Fix the proto (reserve removed numbers and names, add new fields instead); rebuild the baseline "
        "(scripts/proto_baseline.py) only when cutting a release."
    )


@pytest.mark.parametrize(
    ("edit", "old", "new", "field"),
    [
        ("renumber", "  string query = 2;\n", "  string query = 16;\n", ('"2"', '"query"', '"RetrieveRequest"')),
        ("delete", "  bool cached = 5;\n", "", ('"5"', '"cached"', '"RetrieveResponse"')),
    ],
    ids=["renumber", "delete"],
)
def test_breaking_change_is_caught(
    buf: Path, tmp_path: Path, edit: str, old: str, new: str, field: tuple[str, ...]
) -> None:
    protos = tmp_path / "protos"
    shutil.copytree(PROTOS, protos)
    proto = protos / PUBLIC_PROTO
    source = proto.read_text()
    assert source.count(old) == 1, f"retrieval.proto no longer has {old.strip()!r}: update this test's edit"
    proto.write_text(source.replace(old, new))
    done = breaking(buf, protos)
    assert done.returncode != 0, f"buf breaking accepted a {edit}d field:\n{done.stdout}{done.stderr}"
    found = annotations(done)
    assert any(a["type"] == "FIELD_NO_DELETE" and all(part in str(a["message"]) for part in field) for a in found), (
        f"no FIELD_NO_DELETE naming {' '.join(field)} in:\n{done.stdout}{done.stderr}"
    )
    assert all(str(a["path"]).endswith(PUBLIC_PROTO.as_posix()) for a in found), done.stdout
