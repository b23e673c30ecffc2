"""Regenerate services/_proto from protos/ (the one pinned command; CI checks for drift).

    python scripts/gen_protos.py          # rewrite the generated code
    python scripts/gen_protos.py --check  # exit 1 if the checked-in code differs

protoc writes imports relative to the proto root (`from quarry.common.v1 import ...`);
they are rewritten to the package the code lives in (`services._proto.quarry...`).
"""

from __future__ import annotations

import argparse
import filecmp
import re
import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
OUT = ROOT / "services" / "_proto"
PACKAGE = "services._proto"
_IMPORT = re.compile(r"^(from|import) quarry\.", re.MULTILINE)


def generate(dest: Path) -> None:
    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_ROOT.rglob("*.proto"))
    include = Path(protoc.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={dest}",
        f"--grpc_python_out={dest}",
        f"--mypy_out={dest}",
        f"--mypy_grpc_out={dest}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    for path in dest.rglob("*.py*"):
        text = _IMPORT.sub(lambda m: f"{m.group(1)} {PACKAGE}.quarry.", path.read_text())
        path.write_text(text)
    for directory in [dest, *[p for p in dest.rglob("*") if p.is_dir()]]:
        (directory / "__init__.py").touch()
    (dest / "py.typed").touch()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp) / "_proto"
        fresh.mkdir()
        generate(fresh)
        if args.check:
            diff = _differences(fresh, OUT)
            for line in diff:
                print(line, file=sys.stderr)
            return 1 if diff else 0
        if OUT.exists():
            shutil.rmtree(OUT)
        shutil.copytree(fresh, OUT)
    return 0


def _differences(a: Path, b: Path) -> list[str]:
    names_a = {p.relative_to(a) for p in a.rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    names_b = {p.relative_to(b) for p in b.rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    out = [f"missing: {n}" for n in sorted(names_a - names_b)]
    out += [f"extra: {n}" for n in sorted(names_b - names_a)]
    out += [
        f"differs: {n}"
        for n in sorted(names_a & names_b)
        if not filecmp.cmp(a / n, b / n, shallow=False)
    ]
    return out


if __name__ == "__main__":
    raise SystemExit(main())
