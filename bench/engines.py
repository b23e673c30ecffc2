"""The cluster engines beside the embedded ones, measured in one run through the public HTTP API.

Two stacks: ``embedded`` (tantivy, SQLite, the in-process LRU) and ``cluster`` (OpenSearch for the
sparse leg, and PostgreSQL for the catalog and Redis for the cache when given). Dense search is
the embedded Qdrant engine in both (no Qdrant server runs on these machines), so the figures
isolate the cluster engines.

- Quality: nDCG@10 / recall@100 of BM25 alone and of the default hybrid on each judged
  collection, each stack ingesting the collections itself.
- Speed: sync chunks/s from empty, and retrieve p50/p99 at concurrency 1 and 32 over an index
  grown to 100k chunks whose keyword index lives in tantivy and, rebuilt from the catalog, in
  OpenSearch (``run_speed``).

Each stack keeps its data in ``<work dir>/<stack>`` and the cluster's names (OpenSearch index
prefix, PostgreSQL schema) in ``<work dir>/cluster.json``, so a kept work dir is measured again
without re-ingesting.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.api import QuarryClient, rss_mb, running_stack
from bench.corpus import Dataset, Vocabulary
from bench.load import GROWN, Workload, closed_loop, ingest_synthetic
from bench.quality import measure_datasets
from services.launcher import Stack

#: BM25 alone and the default hybrid: what the sparse engine changes (rerank is not measured here:
#: it does not depend on the engines, and on a shared machine its deadline would blur the figures).
QUALITY_CONFIGS = ("sparse only", "hybrid dbsf 0.5/0.5")


@dataclass(frozen=True)
class ClusterEngines:
    """The servers of the ``cluster`` stack; ``None`` keeps that engine embedded."""

    opensearch_url: str
    postgres_url: str | None = None
    redis_url: str | None = None

    def env(self, work_dir: Path) -> dict[str, str]:
        """The stack's settings, with names kept in the work dir so a rerun finds its indexes."""
        names_file = work_dir / "cluster.json"
        names = json.loads(names_file.read_text()) if names_file.exists() else {}
        if not names:
            tag = uuid.uuid4().hex[:10]
            names = {"opensearch_prefix": f"qbench-{tag}-", "postgres_schema": f"quarry_bench_{tag}"}
            work_dir.mkdir(parents=True, exist_ok=True)
            names_file.write_text(json.dumps(names))
        env = {
            "QUARRY_SPARSE_OPENSEARCH_URL": self.opensearch_url,
            "QUARRY_SPARSE_OPENSEARCH_INDEX_PREFIX": names["opensearch_prefix"],
            # A single test node cannot place replicas; a real cluster keeps the default (1).
            "QUARRY_SPARSE_OPENSEARCH_REPLICAS": "0",
        }
        if self.postgres_url:
            env |= {"QUARRY_FILES_DATABASE_URL": self.postgres_url,
                    "QUARRY_FILES_DATABASE_SCHEMA": names["postgres_schema"]}
        if self.redis_url:
            env["QUARRY_GATEWAY_REDIS_URL"] = self.redis_url
        return env

    def described(self) -> dict[str, str]:
        """What the result file records: the engines, without credentials in URLs."""
        return {k: _redacted(v) for k, v in (("opensearch", self.opensearch_url), ("postgres", self.postgres_url),
                                             ("redis", self.redis_url)) if v}


def _redacted(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    return f"{scheme}{sep}{rest.rsplit('@', 1)[-1]}" if sep else url


def stacks(engines: ClusterEngines, work_dir: Path) -> dict[str, dict[str, str]]:
    return {"embedded": {}, "cluster": engines.env(work_dir)}


def run_quality(datasets: Sequence[Dataset], work_dir: Path, engines: ClusterEngines, *,
                max_queries: int | None = None, configs: Sequence[str] = QUALITY_CONFIGS) -> dict[str, Any]:
    """Every configuration on every dataset, first on the embedded stack and then on the cluster one."""
    out: dict[str, Any] = {"configs": list(configs), "stacks": {}}

    async def drive(stack: Stack) -> dict[str, Any]:
        results, _ = await measure_datasets(stack, datasets, configs, max_queries)
        return results

    for name, env in stacks(engines, work_dir).items():
        print(f"quality on the {name} stack", flush=True)
        with running_stack(work_dir / name, env) as stack:
            out["stacks"][name] = asyncio.run(drive(stack))
    return out


def quality_rows(q: Mapping[str, Any]) -> list[list[str]]:
    """(dataset, configuration, embedded, cluster, change) rows of nDCG@10."""
    rows = []
    embedded, cluster = q["stacks"]["embedded"], q["stacks"]["cluster"]
    for dataset in embedded:
        for config in q["configs"]:
            a = embedded[dataset]["configs"][config]["ndcg@10"]
            b = cluster[dataset]["configs"][config]["ndcg@10"]
            rows.append([dataset, config, f"{a:.4f}", f"{b:.4f}", f"{100 * (b / a - 1):+.2f} %"])
    return rows


# -- speed ------------------------------------------------------------------------------------------


async def _wait_job(client: QuarryClient, index_id: str, timeout: float = 7200) -> float:
    """Seconds until the index's running job (a sync or a rebuild) has succeeded."""
    t0 = time.perf_counter()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        index = await client.call("GET", f"/api/v1/indexes/{index_id}", params={"expand": "sync_in_progress"})
        if index.get("sync_status") == "succeeded" and not index.get("sync_in_progress"):
            return time.perf_counter() - t0
        if index.get("sync_status") in ("failed", "cancelled", "partially_succeeded"):
            raise RuntimeError(f"job ended {index.get('sync_status')}: {index.get('sync_progress')}")
        await asyncio.sleep(0.5)
    raise TimeoutError("the job did not finish in time")


def run_speed(vocab: Vocabulary, work_dir: Path, engines: ClusterEngines, *, size: int = 100_000,
              first: int = 10_000, concurrencies: Sequence[int] = (1, 32), duration: float = 30) -> dict[str, Any]:
    """The sparse engines at ``size`` chunks, in one run.

    1. Sync throughput from empty: ``first`` chunks of the same synthetic files into an empty
       embedded stack and an empty cluster stack (dense embeds in both: the figure is end to end).
    2. The embedded stack's index grown to ``size`` chunks; its work dir copied and the copy
       started with OpenSearch as its sparse engine, whose keyword index is then rebuilt from the
       catalog's parsed texts (``POST .../rebuild``, sparse only): both stacks hold the same
       chunks under the same ids, with the same dense shard and catalog (SQLite in both, so only
       the sparse engine differs).
    3. Closed-loop retrieves (no rerank, fresh queries) at each concurrency, the stacks measured
       in turn while both are up.
    """
    out: dict[str, Any] = {"size": size, "first": first, "ingest": {}, "load": {}}
    embedded_dir, cluster_dir = work_dir / "speed-embedded", work_dir / "speed-cluster"
    opensearch_env = {k: v for k, v in engines.env(work_dir).items() if k.startswith("QUARRY_SPARSE_")}
    opensearch_env["QUARRY_SPARSE_OPENSEARCH_INDEX_PREFIX"] = f"qspeed-{uuid.uuid4().hex[:8]}-"

    async def first_sync(stack: Stack) -> dict[str, Any]:
        async with QuarryClient(stack.base_url) as client:  # the same files in both stacks
            step = await ingest_synthetic(client, vocab.reseeded(7), first, name="synthetic")
            step.pop("_files")
            return step

    grown = embedded_dir / GROWN
    if not grown.exists():
        with running_stack(embedded_dir) as stack:
            step = asyncio.run(first_sync(stack))
            out["ingest"]["embedded"] = step
            print(f"  embedded: {step['chunks']} chunks synced from empty at {step['chunks_per_s']:.1f} chunks/s",
                  flush=True)

            async def grow() -> None:
                async with QuarryClient(stack.base_url) as client:
                    more = await ingest_synthetic(client, vocab, size - step["chunks"], directory=step["directory_id"],
                                                  index_id=step["index_id"], start=step["next_file"])
                    more.pop("_files")
                    total = step["chunks"] + more["chunks"]
                    grown.write_text(json.dumps({"index_id": step["index_id"], "chunks": total, "first": step}))
            asyncio.run(grow())
    state = json.loads(grown.read_text())
    out["ingest"].setdefault("embedded", state["first"])
    out["chunks"] = state["chunks"]
    index_id = state["index_id"]

    with running_stack(work_dir / "speed-cluster-ingest", opensearch_env) as stack:
        step = asyncio.run(first_sync(stack))
        out["ingest"]["cluster"] = step
        print(f"  opensearch: {step['chunks']} chunks synced from empty at {step['chunks_per_s']:.1f} chunks/s",
              flush=True)

    if cluster_dir.exists():
        shutil.rmtree(cluster_dir)
    shutil.copytree(embedded_dir, cluster_dir, ignore=shutil.ignore_patterns("sparse", "run", "stack.log"))
    with running_stack(embedded_dir) as embedded, running_stack(cluster_dir, opensearch_env) as cluster:
        async def rebuild() -> float:
            async with QuarryClient(cluster.base_url) as client:
                await client.call("POST", f"/api/v1/indexes/{index_id}/rebuild", json={"engines": ["sparse"]})
                return await _wait_job(client, index_id)

        seconds = asyncio.run(rebuild())
        out["rebuild"] = {"chunks": state["chunks"], "seconds": seconds, "chunks_per_s": state["chunks"] / seconds}
        print(f"  opensearch keyword index rebuilt from the catalog: {out['rebuild']['chunks_per_s']:.0f} chunks/s",
              flush=True)

        async def measure(stack: Stack, seed: int) -> dict[str, Any]:
            async with QuarryClient(stack.base_url, connections=max(concurrencies)) as client:
                work = Workload(client, index_id, vocab, [], seed=seed)
                results = {}
                for c in concurrencies:
                    send = work.sender("retrieve")
                    for _ in range(5):
                        await send()
                    results[str(c)] = await closed_loop(send, c, duration)
                return results

        for name, stack, seed in (("embedded", embedded, 301), ("cluster", cluster, 302)):
            out["load"][name] = asyncio.run(measure(stack, seed))
            for c, r in out["load"][name].items():
                print(f"  {name:9s} c={c:3s}: p50 {r.get('p50', 0):7.1f} ms  p99 {r.get('p99', 0):7.1f} ms  "
                      f"{r['throughput_rps']:6.1f} req/s  errors {r['errors']}  degraded {r['degraded']}", flush=True)
        out["rss_mb"] = {"embedded": rss_mb(embedded), "cluster": rss_mb(cluster)}
    return out
