"""Rebuild protos/baseline/retrieval-v1.binpb, the image of the public gRPC API that
``buf breaking`` checks every change against (tests/protoapi/test_buf.py).

Run it ONLY when cutting a release, after the release's protos are final: the baseline is the
promise made to generated clients, and rebuilding it at any other time would silently accept
whatever breaking change is in the working tree. A change that the check rejects is fixed in the
proto (reserve the number and name, add a new field, or a v2 package), not by rebuilding.

    python scripts/proto_baseline.py          # rewrite the baseline from protos/
    python scripts/proto_baseline.py --check  # exit 1 if the baseline differs from protos/

The image holds quarry/retrieval/v1 only (the internal protos may change freely) and what it
imports (google/protobuf/struct.proto), built with the buf version pinned in
tests/protoapi/buf.py (installed from npm on first use).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.protoapi.buf import BufUnavailable, buf_binary  # noqa: E402

PROTO_ROOT = ROOT / "protos"
PUBLIC_API = PROTO_ROOT / "quarry" / "retrieval" / "v1"
BASELINE = PROTO_ROOT / "baseline" / "retrieval-v1.binpb"


def build(dest: Path, timeout: float = 120) -> None:
    """``buf build`` of the public API into ``dest`` (a binary FileDescriptorSet image)."""
    command = [
        str(buf_binary()),
        "build",
        str(PROTO_ROOT.relative_to(ROOT)),
        "--path",
        str(PUBLIC_API.relative_to(ROOT)),
        "-o",
        str(dest),
    ]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise SystemExit(f"buf build failed (exit {done.returncode}):\n{done.stdout}{done.stderr}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="compare instead of rewriting")
    args = parser.parse_args()
    try:
        buf_binary()
    except BufUnavailable as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.check:
        with tempfile.TemporaryDirectory() as tmp:
            fresh = Path(tmp) / BASELINE.name
            build(fresh)
            if not BASELINE.exists() or fresh.read_bytes() != BASELINE.read_bytes():
                print(f"{BASELINE.relative_to(ROOT)} differs from protos/ (expected between releases)")
                return 1
        print(f"{BASELINE.relative_to(ROOT)} matches protos/")
        return 0
    BASELINE.parent.mkdir(parents=True, exist_ok=True)
    build(BASELINE)
    print(f"wrote {BASELINE.relative_to(ROOT)} ({BASELINE.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
