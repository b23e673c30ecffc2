"""The cluster engines beside the embedded ones, measured in one run through the public HTTP API.

Two stacks: ``embedded`` (tantivy, SQLite, the in-process LRU) and ``cluster`` (OpenSearch for the
sparse leg, and PostgreSQL for the catalog and Redis for the cache when given). Dense search is
the embedded Qdrant engine in both (no Qdrant server runs on these machines), so the figures
isolate the cluster engines.

- Quality: nDCG@10 / recall@100 of BM25 alone and of the default hybrid on each judged
  collection, each stack ingesting the collections itself.
- Speed: see ``run_speed`` (sync chunks/s from empty, and retrieve latency over a grown index).

Each stack keeps its data in ``<work dir>/<stack>`` and the cluster's names (OpenSearch index
prefix, PostgreSQL schema) in ``<work dir>/cluster.json``, so a kept work dir is measured again
without re-ingesting.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.api import running_stack
from bench.corpus import Dataset
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
