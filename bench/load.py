"""Speed: closed-loop load through the HTTP API, the in-process floor and the LlamaIndex peer,
ingest throughput against raw embedding, and latency/memory as the corpus grows.

Closed loop: ``concurrency`` clients each send a request, wait for the answer, send the next,
for ``duration`` seconds (loopback only; bounded in time). Every retrieve query is new (drawn
from the synthetic vocabulary), so the response cache never answers except in the "cache hit"
mode, which repeats one query. The load generator shares the machine's cores with the stack.
"""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.api import QuarryClient, Timed, rss_mb, running_stack
from bench.corpus import Vocabulary, synthetic_files
from bench.metrics import percentiles

STAGES = ("dense_embed", "dense", "sparse", "fusion", "rerank", "retrieve")
RETRIEVE_MODES = ("retrieve", "retrieve+rerank", "cache hit")
FILE_MODES = ("find", "grep", "read")


def summarize(samples: Sequence[Timed], elapsed: float) -> dict[str, Any]:
    ok = [s for s in samples if s.status < 400]
    out: dict[str, Any] = {
        "requests": len(samples), "errors": len(samples) - len(ok),
        "throughput_rps": len(ok) / elapsed if elapsed > 0 else 0.0,
        **{k: v * 1000 for k, v in percentiles([s.seconds for s in ok]).items()},
    }
    stages: dict[str, list[float]] = {}
    for s in ok:
        for name, value in (s.body.get("latency") or {}).items():
            stages.setdefault(name, []).append(value)
    if stages:
        out["stages_ms_p50"] = {k: statistics.median(v) * 1000 for k, v in stages.items()}
    out["degraded"] = sum(1 for s in ok if s.body.get("degraded"))
    out["cached"] = sum(1 for s in ok if s.body.get("cached"))
    return out


async def closed_loop(send: Callable[[], Awaitable[Timed]], concurrency: int, duration: float,
                      max_requests: int = 1_000_000) -> dict[str, Any]:
    """``concurrency`` clients, each sending the next request when the previous one answered."""
    samples: list[Timed] = []
    end = time.monotonic() + duration

    async def client() -> None:
        while time.monotonic() < end and len(samples) < max_requests:
            samples.append(await send())

    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    result = summarize(samples, time.perf_counter() - t0)
    result["concurrency"] = concurrency
    return result


class Workload:
    """The requests of each mode against one index."""

    def __init__(self, client: QuarryClient, index_id: str, vocab: Vocabulary, files: Sequence[dict[str, Any]],
                 seed: int = 11, used: set[str] | None = None) -> None:
        self.client = client
        self.index_id = index_id
        self.queries = vocab.reseeded(seed)
        self.words = vocab.words[200:2200] or vocab.words
        self.files = list(files)
        self.rng = random.Random(seed)
        self.fixed = self.queries.query()
        # Shared by every workload of a run: a query one of them sent may be in the cache.
        self._used = used if used is not None else set()
        self._used.add(self.fixed)

    def fresh_query(self) -> str:
        """A query not sent before (so the response cache cannot answer it); a small vocabulary
        that runs out of new word combinations gets a numbered word appended."""
        for _ in range(20):
            text = self.queries.query()
            if text not in self._used:
                break
        else:
            text = f"{text} n{len(self._used)}"
        self._used.add(text)
        return text

    def sender(self, mode: str) -> Callable[[], Awaitable[Timed]]:
        c, idx = self.client, self.index_id
        if mode == "retrieve":
            return lambda: c.retrieve(idx, self.fresh_query(), rerank={"enabled": False})
        if mode == "retrieve+rerank":
            return lambda: c.retrieve(idx, self.fresh_query())
        if mode == "cache hit":
            return lambda: c.retrieve(idx, self.fixed)
        if mode == "find":
            return lambda: c.timed("/api/v1/retrieval/files/find", {
                "index_id": idx, "file_name_contains": self.rng.choice(self.files)["file_name"][:-6], "page_size": 50})
        if mode == "grep":
            return lambda: c.timed("/api/v1/retrieval/files/grep", {
                "index_id": idx, "file_id": self.rng.choice(self.files)["file_id"],
                "pattern": self.rng.choice(self.words), "context_chars": 40, "limit": 20})
        if mode == "read":
            return lambda: c.timed("/api/v1/retrieval/files/read", {
                "index_id": idx, "file_id": self.rng.choice(self.files)["file_id"], "max_length": 4000})
        raise ValueError(f"unknown mode {mode!r}")


def count_chunks(text: str) -> int:
    """Chunks the ingest worker makes of ``text`` (same chunker, default options)."""
    from services.ingest.chunking import chunk_text

    return len(chunk_text(text))


def synthetic_batch(vocab: Vocabulary, start: int, chunks: int) -> tuple[list[tuple[str, str]], int]:
    """Files from number ``start`` on until they hold at least ``chunks`` chunks."""
    files, total = [], 0
    for name, text in synthetic_files(vocab, start, 10**9):
        files.append((name, text))
        total += count_chunks(text)
        if total >= chunks:
            return files, total
    raise AssertionError("unreachable")


def raw_embedding(texts: Sequence[str], batch_size: int = 32) -> dict[str, Any]:
    """Chunks/s of the packaged model alone (the dense service's batch size and token cap)."""
    from services.common.models import load_encoder

    encoder = load_encoder(batch_size=batch_size)
    encoder.pooled(list(texts[:8]))
    t0 = time.perf_counter()
    encoder.pooled(list(texts))
    seconds = time.perf_counter() - t0
    return {"chunks": len(texts), "seconds": seconds, "chunks_per_s": len(texts) / seconds, "batch_size": batch_size}


def sample_chunks(files: Sequence[tuple[str, str]], n: int) -> list[str]:
    from services.ingest.chunking import chunk_text

    out: list[str] = []
    for _, text in files:
        out.extend(c.content for c in chunk_text(text))
        if len(out) >= n:
            break
    return out[:n]


async def ingest_synthetic(client: QuarryClient, vocab: Vocabulary, chunks: int, *, name: str = "synthetic",
                           directory: str | None = None, index_id: str | None = None,
                           start: int = 0) -> dict[str, Any]:
    """Upload synthetic files holding ``chunks`` chunks and sync; a new index unless ``index_id``."""
    files, total = synthetic_batch(vocab, start, chunks)
    t0 = time.perf_counter()
    directory = directory or await client.create_directory(name)
    await client.upload(directory, files)
    upload_s = time.perf_counter() - t0
    index_id = index_id or await client.create_index(directory, name)
    sync_s = await client.sync(index_id)
    return {"index_id": index_id, "directory_id": directory, "files": len(files), "chunks": total,
            "upload_seconds": upload_s, "sync_seconds": sync_s, "chunks_per_s": total / sync_s,
            "next_file": start + len(files), "_files": files}


# -- floor and peer, in this process, after the stack has stopped -----------------------------


class Floor:
    """The same query's work in one process, no network: embed, embedded Qdrant, tantivy, fusion
    (and, for the rerank floor, MaxSim over the window's stored token vectors, or the
    late-interaction reranker where the index has none)."""

    def __init__(self, data_dir: Path, index_id: str) -> None:
        from services.common.models import load_encoder
        from services.dense.adapters.qdrant_edge import QdrantEdgeVectorIndex
        from services.rerank.bootstrap import build_reranker
        from services.rerank.settings import RerankSettings
        from services.sparse.adapters.tantivy import TantivyKeywordIndex

        self.encoder = load_encoder()
        self.vectors = QdrantEdgeVectorIndex(data_dir / "dense", self.encoder.dim, optimize_in_background=False)
        self.keywords = TantivyKeywordIndex(data_dir / "sparse")
        # The rerank service's defaults (token cap, batching), so both sides do the same work.
        self.reranker = build_reranker(RerankSettings())
        self.index_id = index_id

    async def query(self, text: str, rerank: bool) -> list[str]:
        """The gateway's default plan (candidates, weights, fusion, rerank depth and blend)."""
        from gateway.fusion import fuse
        from gateway.retrieval import blend
        from gateway.settings import RetrievalDefaults
        from services.common.late_interaction import query_tokens

        d = RetrievalDefaults()
        # One model run gives the query's sentence vector and its token vectors, as in dense.
        vectors, (states,) = await asyncio.to_thread(self.encoder.pooled_and_tokens, [text])
        vector = vectors[0]
        dense, sparse = await asyncio.gather(
            self.vectors.search(self.index_id, vector, d.num_candidates, None),
            self.keywords.search(self.index_id, text, d.num_candidates, None))
        fused = fuse(dense, sparse, dense_weight=d.dense_weight, sparse_weight=d.sparse_weight, method=d.fusion)
        if rerank and fused:
            window = fused[: max(d.rerank_depth, d.top_k)]
            scores = None
            if d.rerank_source == "stored":  # the token vectors stored with the chunks, as the gateway
                scores = await self.vectors.late_scores(self.index_id, query_tokens(states),
                                                        [f.chunk.id for f in window])
            if scores is None:
                scores = await self.reranker.score(text, [f.chunk.content for f in window])
            mixed = blend(scores, [f.score for f in window], d.rerank_blend)
            fused = [f for _, f in sorted(zip(mixed, window, strict=True), key=lambda p: -p[0])]
        return [f.chunk.id for f in fused[: d.top_k]]

    async def close(self) -> None:
        await self.vectors.close()
        await self.keywords.close()
        await self.reranker.close()


async def floor_latency(floor: Floor, queries: Iterator[str], rerank: bool, duration: float,
                        max_requests: int) -> dict[str, Any]:
    async def send() -> Timed:
        t0 = time.perf_counter()
        await floor.query(next(queries), rerank)
        return Timed(time.perf_counter() - t0, 200)

    return await closed_loop(send, 1, duration, max_requests)


def peer_load(peer: Any, queries: Vocabulary, concurrencies: Sequence[int], duration: float) -> dict[str, Any]:
    """Closed loop over the peer's ``retrieve`` in threads (the peer is synchronous)."""
    def worker(samples: list[Timed], end: float) -> None:
        while time.monotonic() < end:
            text = queries.query()
            t0 = time.perf_counter()
            peer.retrieve(text)
            samples.append(Timed(time.perf_counter() - t0, 200))

    out = {}
    for concurrency in concurrencies:
        samples: list[Timed] = []
        end = time.monotonic() + duration
        t0 = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            for f in [pool.submit(worker, samples, end) for _ in range(concurrency)]:
                f.result()
        out[str(concurrency)] = {**summarize(samples, time.perf_counter() - t0), "concurrency": concurrency}
        print(f"  peer c={concurrency}: p50 {out[str(concurrency)].get('p50', 0):.1f} ms, "
              f"{out[str(concurrency)]['throughput_rps']:.1f} req/s", flush=True)
    return out


# -- the commands ----------------------------------------------------------------------------


async def _load_matrix(client: QuarryClient, work: Workload, modes: Sequence[str],
                       concurrencies: Sequence[int], duration: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    await work.client.retrieve(work.index_id, work.fixed)  # the cache-hit query is cached from here on
    for mode in modes:
        out[mode] = {}
        for concurrency in concurrencies:
            send = work.sender(mode)
            for _ in range(3):  # warm-up, not recorded
                await send()
            r = await closed_loop(send, concurrency, duration)
            out[mode][str(concurrency)] = r
            print(f"  {mode:16s} c={concurrency:3d}: p50 {r.get('p50', 0):8.1f} ms  p99 {r.get('p99', 0):8.1f} ms  "
                  f"{r['throughput_rps']:7.1f} req/s  errors {r['errors']}", flush=True)
    return out


#: In a work dir: the synthetic index a run grew (id, directory, chunks, next file number).
GROWN = "synthetic.json"


def run_speed(vocab: Vocabulary, work_dir: Path, *, sizes: Sequence[int], concurrencies: Sequence[int],
              duration: float, matrix: bool = True, peer: bool = True, scale_duration: float | None = None,
              modes: Sequence[str] = RETRIEVE_MODES + FILE_MODES, raw_sample: int = 512,
              reuse: bool = False, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """One synthetic index grown through ``sizes`` chunks (ingest, then p50/p99 at concurrency 1
    and RSS per process at each size); at the largest size the load matrix, then (stack
    stopped) the in-process floor and the peer over the same index.

    ``reuse``: start from the index an earlier run grew in ``work_dir`` and skip the sizes it
    already holds (to measure again, e.g. with other server settings, without re-ingesting).
    """
    result: dict[str, Any] = {"sizes": list(sizes), "duration_s": duration, "concurrency": list(concurrencies),
                              "scale": []}
    corpus: list[tuple[str, str]] = []
    used: set[str] = set()
    grown = work_dir / GROWN

    async def drive(base_url: str, stack: Any) -> None:
        async with QuarryClient(base_url, connections=max(concurrencies)) as client:
            index_id = directory = None
            have, next_file = 0, 0
            if reuse and grown.exists():
                saved = json.loads(grown.read_text())
                index_id, directory, have, next_file = (saved["index_id"], saved["directory_id"], saved["chunks"],
                                                        saved["next_file"])
                result["reused"] = saved
                print(f"  reusing index {index_id}: {have} chunks", flush=True)
            for size in sorted(sizes):
                if size <= have:
                    continue
                step = await ingest_synthetic(client, vocab, size - have, name="synthetic", directory=directory,
                                              index_id=index_id, start=next_file)
                corpus.extend(step.pop("_files"))
                index_id, directory, next_file = step["index_id"], step["directory_id"], step["next_file"]
                have += step["chunks"]
                grown.write_text(json.dumps({"index_id": index_id, "directory_id": directory, "chunks": have,
                                             "next_file": next_file}))
                print(f"  +{step['chunks']} chunks ({have} in all) synced in {step['sync_seconds']:.0f} s: "
                      f"{step['chunks_per_s']:.1f} chunks/s", flush=True)
                if "ingest" not in result:  # the first (from-empty) sync is the ingest figure
                    step["dense_disk_bytes"] = disk_bytes(work_dir / "dense")
                    result["ingest"] = step
                    result["raw_embedding"] = await asyncio.to_thread(raw_embedding, sample_chunks(corpus, raw_sample))
                    print(f"  raw embedding {result['raw_embedding']['chunks_per_s']:.1f} chunks/s", flush=True)
                # Its own query stream: the load matrix (seed 11) must not meet these in the cache.
                work = Workload(client, index_id, vocab, [], seed=100 + len(result["scale"]), used=used)
                point: dict[str, Any] = {"chunks": have, "sync": step}
                for mode in ("retrieve", "retrieve+rerank"):
                    send = work.sender(mode)
                    for _ in range(3):
                        await send()
                    point[mode] = await closed_loop(send, 1, scale_duration or duration)
                point["rss_mb"] = rss_mb(stack)
                result["scale"].append(point)
                print(f"  {have:8d} chunks: retrieve p50 {point['retrieve'].get('p50', 0):.1f} ms "
                      f"p99 {point['retrieve'].get('p99', 0):.1f}; rerank p50 "
                      f"{point['retrieve+rerank'].get('p50', 0):.1f} ms; rss {point['rss_mb']}", flush=True)
            result["index_id"] = index_id
            result["chunks"] = have
            if matrix:
                files = await client.find(index_id)
                work = Workload(client, index_id, vocab, files, used=used)
                result["quarry"] = await _load_matrix(client, work, modes, concurrencies, duration)
                result["rss_mb"] = rss_mb(stack)

    with running_stack(work_dir, env) as stack:
        asyncio.run(drive(stack.base_url, stack))
    if matrix:
        result["floor"] = asyncio.run(_floor(work_dir, result["index_id"], vocab, duration))
        if peer:
            result["peer"] = _peer(work_dir, result["index_id"], vocab, duration, concurrencies)
    return result


def disk_bytes(folder: Path) -> int:
    """Bytes of the files under ``folder`` (what a data directory costs on disk)."""
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


#: The dense service without stored token vectors (the rerank service computes them per query).
NO_TOKEN_VECTORS = {"QUARRY_DENSE_TOKEN_VECTORS": "0"}


def run_ingest(vocab: Vocabulary, work_dir: Path, chunks: int) -> dict[str, Any]:
    """One sync of ``chunks`` from empty with the stored token vectors (the default), then the
    same corpus into a fresh stack without them: chunks/s of each against the raw embedding
    throughput, and the dense data directory's bytes per chunk."""
    result = run_speed(vocab, work_dir / "token-vectors", sizes=[chunks], concurrencies=[1], duration=5,
                       matrix=False, peer=False)
    without = run_speed(vocab, work_dir / "no-token-vectors", sizes=[chunks], concurrencies=[1], duration=5,
                        matrix=False, peer=False, env=NO_TOKEN_VECTORS)
    result["without_token_vectors"] = {"ingest": without["ingest"], "raw_embedding": without["raw_embedding"]}
    return result


async def _floor(work_dir: Path, index_id: str, vocab: Vocabulary, duration: float) -> dict[str, Any]:
    floor = Floor(work_dir, index_id)
    try:
        queries = vocab.reseeded(11)
        stream = iter(queries.query, None)
        for _ in range(3):
            await floor.query(next(stream), True)
        out = {"retrieve": await floor_latency(floor, stream, False, duration, 100_000),
               "retrieve+rerank": await floor_latency(floor, stream, True, duration, 100_000)}
        print(f"  floor retrieve p50 {out['retrieve'].get('p50', 0):.1f} ms; "
              f"with rerank {out['retrieve+rerank'].get('p50', 0):.1f} ms", flush=True)
        return out
    finally:
        await floor.close()


def _peer(work_dir: Path, index_id: str, vocab: Vocabulary, duration: float,
          concurrencies: Sequence[int]) -> dict[str, Any]:
    from bench.peer import PeerRetriever, read_chunks

    t0 = time.perf_counter()
    peer = PeerRetriever(read_chunks(work_dir / "dense", index_id))
    build = time.perf_counter() - t0
    try:
        wanted = [c for c in concurrencies if c in (1, 32)] or list(concurrencies)[:1]
        return {"build_seconds": build, "load": peer_load(peer, vocab.reseeded(11), wanted, duration)}
    finally:
        peer.close()
