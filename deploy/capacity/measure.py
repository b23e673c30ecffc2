"""Measure the inputs of the capacity model in docs/deploy.md on this machine.

Starts the real stack on embedded engines (``services.launcher.Stack``), ingests text built from
the judged collections in ``shared/datasets`` in two equal halves, and reports:

* on-disk bytes per chunk of embedded Qdrant (dense), tantivy (sparse) and the SQLite catalog
  (files: uploaded bytes + parsed text), as the growth between the two halves (so fixed costs such
  as preallocated WAL segments cancel out);
* CPU seconds per ingested chunk in each process (embedding dominates);
* CPU seconds per query in each process, with rerank on and off, from /proc CPU counters over
  sequential distinct queries (CPU time, not wall time, so a busy machine skews it little).

``engines`` measures the engines alone, in process, through the same adapters and at larger sizes
(real chunk text, random unit vectors: vector values change neither the bytes stored nor the graph's
degree, and embedding tens of thousands of chunks would take this machine an hour).

Run: ``.venv/bin/python deploy/capacity/measure.py stack [--chunks 4000] [--queries 200] --out stack.json``
and ``.venv/bin/python deploy/capacity/measure.py engines [--sizes 10000 20000] --out engines.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from services.cli import Client
from services.common.domain import Chunk, chunk_id
from services.dense.adapters.qdrant_edge import QdrantEdgeVectorIndex
from services.ingest.chunking import chunk_text
from services.launcher import Stack
from services.sparse.adapters.tantivy import TantivyKeywordIndex

DATASETS = Path(__file__).resolve().parents[2].parent / "shared" / "datasets"  # ../shared from the repo root
CLOCK_TICK = os.sysconf("SC_CLK_TCK")
PROCESSES = ("gateway", "dense", "sparse", "rerank", "files", "ingest")


def cpu_seconds(pid: int) -> float:
    """user + system CPU of a process (all its threads) from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICK


def snapshot(stack: Stack) -> dict[str, float]:
    return {p.name: cpu_seconds(p.popen.pid) for p in stack.processes}


def delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {name: after[name] - before[name] for name in before}


def disk_bytes(path: Path) -> dict[str, int]:
    """Apparent and allocated bytes under ``path`` (allocated counts what preallocation really took)."""
    apparent = allocated = 0
    for f in path.rglob("*"):
        if f.is_file():
            st = f.stat()
            apparent += st.st_size
            allocated += st.st_blocks * 512
    return {"apparent": apparent, "allocated": allocated}


def build_files(datasets: Path, out: Path, want_chunks: int) -> tuple[list[tuple[Path, int]], list[str]]:
    """Text files of ~30 documents each (with their chunk counts) up to ``want_chunks`` chunks; plus queries."""
    docs: list[str] = []
    queries: list[str] = []
    for name in ("cisi", "cacm", "cranfield", "vaswani"):
        with (datasets / name / "corpus.jsonl").open() as fh:
            docs += [f"{d.get('title', '')}\n\n{d['text']}".strip() for d in map(json.loads, fh)]
        with (datasets / name / "queries.jsonl").open() as fh:
            queries += [q["text"] for q in map(json.loads, fh)]
    random.Random(7).shuffle(docs)
    files, chunks = [], 0
    for start in range(0, len(docs), 30):
        if chunks >= want_chunks:
            break
        text = "\n\n".join(docs[start : start + 30])
        count = len(chunk_text(text))
        chunks += count
        path = out / f"doc-{start // 30:05d}.txt"
        path.write_text(text)
        files.append((path, count))
    random.Random(11).shuffle(queries)
    return files, queries


def engine_sizes(data_dir: Path) -> dict[str, dict[str, int]]:
    return {name: disk_bytes(data_dir / name) for name in ("dense", "sparse", "files")}


def run_queries(client: Client, index_id: str, queries: list[str], rerank: bool, stack: Stack) -> dict[str, Any]:
    latencies: dict[str, list[float]] = {}
    before = snapshot(stack)
    for text in queries:
        body = client.call("POST", "/api/v1/retrieval/retrieve",
                           json={"index_id": index_id, "query": text, "top_k": 10, "rerank": {"enabled": rerank}})
        if body.get("degraded") or body.get("cached"):
            raise RuntimeError(f"degraded or cached answer: {body.get('degraded')} {body.get('cached')}")
        for stage, seconds in (body.get("latency") or {}).items():
            latencies.setdefault(stage, []).append(seconds)
    used = delta(before, snapshot(stack))
    n = len(queries)
    return {
        "queries": n,
        "cpu_ms_per_query": {k: round(v / n * 1000, 3) for k, v in used.items()},
        "median_stage_ms": {k: round(sorted(v)[len(v) // 2] * 1000, 3) for k, v in latencies.items()},
    }


def corpus_chunks(datasets: Path, count: int) -> list[Chunk]:
    """``count`` chunks of the judged collections as the ingest worker cuts them (text reused past the corpus)."""
    with tempfile.TemporaryDirectory(prefix="quarry-chunks-") as tmp:
        files, _ = build_files(datasets, Path(tmp), 10**9)
        pieces = [(path, piece) for path, _ in files for piece in chunk_text(path.read_text())]
    rng = random.Random(3)
    chunks = []
    for i in range(count):
        path, piece = pieces[i % len(pieces)] if i < len(pieces) else rng.choice(pieces)
        file_id = f"{path.stem}-{i // len(pieces)}"
        chunks.append(Chunk(
            id=chunk_id(file_id, 1, i), index_id="capacity", file_id=file_id, content=piece.content,
            file_name=path.name, metadata={"collection": "beir"}, chunk_index=piece.chunk_index,
            start_char=piece.start_char, end_char=piece.end_char, token_count=piece.token_count,
        ))
    return chunks


def unit_vectors(count: int, dim: int, seed: int) -> npt.NDArray[np.float32]:
    vectors = np.random.default_rng(seed).standard_normal((count, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


async def fill(root: Path, chunks: list[Chunk], queries: list[str], dim: int, seed: int) -> dict[str, float]:
    """Write ``chunks`` into both engines (reopening what ``root`` holds), time top-100 searches (CPU ms per
    query, this process), then close them (flush, settle)."""
    vectors = unit_vectors(len(chunks), dim, seed)
    dense = QdrantEdgeVectorIndex(root / "dense", dim, indexing_threshold_kb=1000, threads=1)
    sparse = TantivyKeywordIndex(root / "sparse", threads=1)
    try:
        for start in range(0, len(chunks), 256):
            batch = chunks[start : start + 256]
            await dense.upsert("capacity", batch, vectors[start : start + 256])
            await sparse.upsert("capacity", batch)
        await dense.close()  # settles the background optimisation; reopened below for the searches
        dense = QdrantEdgeVectorIndex(root / "dense", dim, threads=1)
        probes = unit_vectors(len(queries), dim, seed + 1)
        started = time.process_time()
        for probe in probes:
            await dense.search("capacity", probe, 100, None)
        dense_ms = (time.process_time() - started) / len(queries) * 1000
        started = time.process_time()
        for text in queries:
            await sparse.search("capacity", text, 100, None)
        sparse_ms = (time.process_time() - started) / len(queries) * 1000
    finally:
        await dense.close()
        await sparse.close()
    return {"dense_search_cpu_ms": round(dense_ms, 3), "sparse_search_cpu_ms": round(sparse_ms, 3)}


def engines(args: argparse.Namespace) -> dict[str, Any]:
    sizes = sorted(args.sizes)
    chunks = corpus_chunks(args.datasets, sizes[-1])
    with tempfile.TemporaryDirectory() as tmp:
        _, queries = build_files(args.datasets, Path(tmp), 0)
    text = sum(len(c.content.encode()) for c in chunks) / len(chunks)
    points = []
    with tempfile.TemporaryDirectory(prefix="quarry-engines-") as tmp:
        root, done = Path(tmp), 0
        for size in sizes:
            search = asyncio.run(fill(root, chunks[done:size], queries[: args.queries], 384, seed=size))
            done = size
            points.append({"chunks": size, "dense": disk_bytes(root / "dense"), "sparse": disk_bytes(root / "sparse"),
                           "dense_wal": disk_bytes(next((root / "dense").glob("*/shard/wal"))), **search})
    (lo, hi) = points[0], points[-1]
    grown = hi["chunks"] - lo["chunks"]
    return {
        "content_bytes_per_chunk": round(text),
        "points": points,
        "bytes_per_chunk": {
            engine: round((hi[engine]["allocated"] - lo[engine]["allocated"]) / grown) for engine in ("dense", "sparse")
        },
        "dense_wal_bytes_per_chunk": round((hi["dense_wal"]["allocated"] - lo["dense_wal"]["allocated"]) / grown),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["stack", "engines"])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--datasets", type=Path, default=DATASETS, help="BEIR collections (cisi, cacm, ...)")
    parser.add_argument("--chunks", type=int, default=4000, help="stack: chunks to ingest in all (two halves)")
    parser.add_argument("--queries", type=int, default=200, help="distinct queries (stack: per rerank setting)")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="stack: extra settings for every process (e.g. QUARRY_RERANK_THREADS=1)")
    parser.add_argument("--log", type=Path, help="stack: the log file (default: discarded with the data)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 20_000], help="engines: index sizes")
    args = parser.parse_args()
    result = engines(args) if args.what == "engines" else stack(args)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


def stack(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="quarry-capacity-") as tmp:
        root = Path(tmp)
        (root / "src").mkdir()
        files, queries = build_files(args.datasets, root / "src", args.chunks)
        env = {
            # Build the HNSW graph on small segments too, as a large index would have it.
            "QUARRY_DENSE_INDEXING_THRESHOLD_KB": "1000",
            # Score every passage (no token-vector cache): the cost of a cold corpus.
            "QUARRY_RERANK_CACHE_SIZE": "0",
            "QUARRY_GATEWAY_CACHE_ENTRIES": "0",
            **dict(item.split("=", 1) for item in args.env),
        }
        stack = Stack(data_dir=root / "data", port=0, env=env, log_file=args.log or root / "stack.log")
        stack.start(timeout=300)
        result: dict[str, Any] = {"machine": f"{os.cpu_count()} cores", "env": env, "files": len(files)}
        try:
            client = Client(stack.base_url, stack.api_key or "", timeout=600)
            half = len(files) // 2
            points = []
            ingest_cpu: dict[str, float] = dict.fromkeys(PROCESSES, 0.0)
            for part in (files[:half], files[half:]):
                before, started = snapshot(stack), time.monotonic()
                index = client.ingest([path for path, _ in part], "capacity", show=False)
                wall = time.monotonic() - started
                for k, v in delta(before, snapshot(stack)).items():
                    ingest_cpu[k] += v
                time.sleep(3)  # let background optimisation settle before sizing
                points.append({"files": len(part), "wall_s": round(wall, 1), "chunks": sum(n for _, n in part),
                               "sizes": engine_sizes(stack.data_dir)})
            result["ingest_points"] = points
            result["ingest_cpu_s"] = {k: round(v, 2) for k, v in ingest_cpu.items()}
            index_id = index["id"]
            result["rerank_off"] = run_queries(client, index_id, queries[: args.queries], False, stack)
            result["rerank_on"] = run_queries(client, index_id, queries[args.queries : 2 * args.queries], True, stack)
        finally:
            stack.stop()
    return result


if __name__ == "__main__":
    main()
