"""Quality: nDCG@10 and recall@100 per dataset and configuration, through the HTTP API.

Each BEIR document is uploaded as one file named ``<doc id>.txt``; a result's ``file_name``
names its document, so a document split into chunks counts once, at its best chunk.

Configurations are request fields only (the server keeps its defaults): each leg alone, the
hybrid with each fusion and a small sweep of weights and candidate depth, and the defaults
with the reranker. A rerank configuration asks for ``top_k`` 20, the default rerank depth, so
it reranks exactly the default window; its recall@100 is the hybrid's, because the reranker
reorders only the top ``rerank_depth`` of the same fused list.

The rerank study then re-scores the default hybrid's fused candidates in this process with
the late-interaction reranker at each passage-token cap and depth, alone and blended with the
fused score at several weights, to choose the setting on quality and cost together.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bench.api import QuarryClient, running_stack
from bench.corpus import Dataset
from bench.metrics import dedupe, evaluate, percentiles
from gateway.retrieval import blend
from services.launcher import Stack

NO_RERANK = {"rerank": {"enabled": False}}

#: name -> (request fields, top_k). Weights: vector_pipeline_weight / full_text_pipeline_weight.
CONFIGS: dict[str, dict[str, Any]] = {
    "sparse only": {"vector_pipeline_weight": 0.0, "full_text_pipeline_weight": 1.0, **NO_RERANK, "top_k": 100},
    "dense only": {"vector_pipeline_weight": 1.0, "full_text_pipeline_weight": 0.0, **NO_RERANK, "top_k": 100},
    "hybrid relative_score 0.5/0.5": {"fusion": "relative_score", **NO_RERANK, "top_k": 100},
    "hybrid rrf 0.5/0.5": {"fusion": "rrf", **NO_RERANK, "top_k": 100},
    "hybrid dbsf 0.5/0.5": {"fusion": "dbsf", **NO_RERANK, "top_k": 100},
    "hybrid relative_score 0.3/0.7": {"fusion": "relative_score", "vector_pipeline_weight": 0.3,
                                      "full_text_pipeline_weight": 0.7, **NO_RERANK, "top_k": 100},
    "hybrid relative_score 0.7/0.3": {"fusion": "relative_score", "vector_pipeline_weight": 0.7,
                                      "full_text_pipeline_weight": 0.3, **NO_RERANK, "top_k": 100},
    "hybrid rrf 0.3/0.7": {"fusion": "rrf", "vector_pipeline_weight": 0.3, "full_text_pipeline_weight": 0.7,
                           **NO_RERANK, "top_k": 100},
    "hybrid rrf 0.7/0.3": {"fusion": "rrf", "vector_pipeline_weight": 0.7, "full_text_pipeline_weight": 0.3,
                           **NO_RERANK, "top_k": 100},
    "hybrid dbsf 0.3/0.7": {"fusion": "dbsf", "vector_pipeline_weight": 0.3, "full_text_pipeline_weight": 0.7,
                            **NO_RERANK, "top_k": 100},
    # top_k 10: the legs are asked for max(num_candidates, top_k), so top_k 100 would hide a depth of 50.
    "hybrid relative_score 0.5/0.5 candidates 50": {"fusion": "relative_score", "num_candidates": 50,
                                                    **NO_RERANK, "top_k": 10},
    "hybrid relative_score 0.5/0.5 candidates 200": {"fusion": "relative_score", "num_candidates": 200,
                                                     **NO_RERANK, "top_k": 100},
    "hybrid rrf 0.5/0.5 candidates 200": {"fusion": "rrf", "num_candidates": 200, **NO_RERANK, "top_k": 100},
    # The server defaults, reranker on. top_k 20 = the default rerank depth, so the reranked window is
    # exactly the default one, and documents split into several chunks still leave 10 distinct
    # documents for nDCG@10 (as the top_k 100 runs above do).
    "defaults + rerank": {"top_k": 20},
    "hybrid rrf + rerank": {"fusion": "rrf", "top_k": 20},
}
#: configuration -> the no-rerank configuration whose top-100 set it shares (recall@100).
RECALL_OF = {"defaults + rerank": "hybrid dbsf 0.5/0.5", "hybrid rrf + rerank": "hybrid rrf 0.5/0.5"}
#: The server's default hybrid (no rerank): its candidates are what the reranker sees.
DEFAULT_HYBRID = "hybrid dbsf 0.5/0.5"
SMOKE_CONFIGS = ("sparse only", "dense only", "hybrid relative_score 0.5/0.5", "hybrid rrf 0.5/0.5",
                 "hybrid dbsf 0.5/0.5", "defaults + rerank")


def doc_of(result: Mapping[str, Any]) -> str:
    name = str(result.get("file_name") or "")
    return name[:-4] if name.endswith(".txt") else name


Raw = dict[str, list[dict[str, Any]]]


async def run_config(client: QuarryClient, index_id: str, queries: Mapping[str, str], fields: Mapping[str, Any],
                     parallel: int = 4) -> tuple[dict[str, list[str]], Raw, list[float], int]:
    """Rankings (document ids) per query, the raw results, each request's seconds, and how many
    answers were degraded (a leg or the reranker dropped)."""
    rankings: dict[str, list[str]] = {}
    raw: dict[str, list[dict[str, Any]]] = {}
    seconds: list[float] = []
    degraded = 0
    sem = asyncio.Semaphore(parallel)

    async def one(qid: str, text: str) -> None:
        nonlocal degraded
        async with sem:
            timed = await client.retrieve(index_id, text, **fields)
        if timed.status >= 400:
            raise RuntimeError(f"query {qid} failed with HTTP {timed.status}")
        raw[qid] = timed.body["results"]
        degraded += bool(timed.body.get("degraded"))
        rankings[qid] = dedupe(doc_of(r) for r in raw[qid])
        seconds.append(timed.seconds)

    await asyncio.gather(*(one(q, t) for q, t in queries.items()))
    return rankings, raw, seconds, degraded


async def ensure_index(client: QuarryClient, ds: Dataset) -> tuple[str, dict[str, Any]]:
    """The dataset's index, ingested through the API unless a finished one of that name exists
    (a kept ``--work-dir`` is reused, so the engines or the reranker can be changed and re-measured)."""
    name = f"beir-{ds.name}"
    found = await client.index_by_name(name)
    if found is not None and found.get("sync_status") == "succeeded":
        return str(found["id"]), {"reused": True}
    index_id, ingest = await client.ingest(name, ((f"{d}.txt", t) for d, t in ds.docs.items()))
    seconds = ingest["upload_seconds"] + ingest["sync_seconds"]
    print(f"  {ds.name:10s} ingested {len(ds.docs)} documents in {seconds:.0f} s", flush=True)
    return index_id, ingest


async def evaluate_dataset(client: QuarryClient, ds: Dataset, index_id: str, configs: Sequence[str],
                           max_queries: int | None) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
    """Evaluate every configuration on the dataset's index; returns the results and the default
    hybrid's raw candidates (for the rerank study)."""
    queries = {q: t for q, t in ds.queries.items() if q in ds.qrels}
    if max_queries:
        queries = dict(list(queries.items())[:max_queries])
    qrels = {q: ds.qrels[q] for q in queries}
    out: dict[str, Any] = {"docs": len(ds.docs), "queries": len(queries), "index_id": index_id, "configs": {}}
    candidates: dict[str, list[dict[str, Any]]] = {}
    for name in configs:
        # Reranked requests one at a time: queued behind each other they would run out of budget.
        fields = CONFIGS[name]
        parallel = 4 if fields.get("rerank") == NO_RERANK["rerank"] else 1
        rankings, raw, seconds, degraded = await run_config(client, index_id, queries, fields, parallel)
        scores = evaluate(rankings, qrels)
        if name in RECALL_OF and RECALL_OF[name] in out["configs"]:
            scores["recall@100"] = out["configs"][RECALL_OF[name]]["recall@100"]
        elif fields.get("top_k", 100) < 100:
            scores["recall@100"] = None  # fewer than 100 results asked for
        out["configs"][name] = {**scores, "degraded": degraded,
                                "latency_ms": {k: v * 1000 for k, v in percentiles(seconds).items()}}
        if name == DEFAULT_HYBRID:
            candidates = raw
        recall = "-" if scores["recall@100"] is None else f"{scores['recall@100']:.4f}"
        print(f"  {ds.name:10s} {name:45s} nDCG@10 {scores['ndcg@10']:.4f}  R@100 {recall}", flush=True)
    return out, candidates


#: Weights of the rerank score when it is blended with the fused score instead of replacing it.
BLENDS = (0.1, 0.2, 0.3, 0.5, 0.7)


def rerank_study(ds: Dataset, candidates: Mapping[str, list[dict[str, Any]]], *,
                 token_caps: Sequence[int], depths: Sequence[int], batch_size: int,
                 timing_queries: int = 40) -> dict[str, Any]:
    """nDCG@10 of the fused candidates reranked in process at each (token cap, depth), and the
    uncached cost of scoring a depth-20 window at each cap (median and p99 over queries)."""
    from services.rerank.adapters.late_interaction import LateInteractionReranker

    qrels = {q: ds.qrels[q] for q in candidates}
    base = evaluate({q: dedupe(doc_of(r) for r in rs) for q, rs in candidates.items()}, qrels)["ndcg@10"]
    out: dict[str, Any] = {"fused_ndcg@10": base, "settings": {}}
    for cap in token_caps:
        timer = LateInteractionReranker.load(max_tokens=cap, batch_size=batch_size, cache_size=0)
        costs = []
        for qid in list(candidates)[:timing_queries]:
            window = [r["content"] for r in candidates[qid][:20]]
            t0 = time.perf_counter()
            asyncio.run(timer.score(ds.queries[qid], window))
            costs.append(time.perf_counter() - t0)
        reranker = LateInteractionReranker.load(max_tokens=cap, batch_size=batch_size, cache_size=100_000,
                                                cache_mb=2048)
        for depth in depths:
            runs: dict[str, list[str]] = {}
            blends: dict[float, dict[str, list[str]]] = {w: {} for w in BLENDS}
            for qid, results in candidates.items():
                window = results[:depth]
                scores = asyncio.run(reranker.score(ds.queries[qid], [r["content"] for r in window]))
                tail = [doc_of(r) for r in results[depth:]]
                order = sorted(range(len(window)), key=lambda i: -scores[i])
                runs[qid] = dedupe([doc_of(window[i]) for i in order] + tail)
                # The gateway's blend of the window's rerank and fused scores, at each weight.
                fused = [r["score"] for r in window]
                for w in BLENDS:
                    mixed = blend(scores, fused, w)
                    order_w = sorted(range(len(window)), key=lambda i: -mixed[i])
                    blends[w][qid] = dedupe([doc_of(window[i]) for i in order_w] + tail)
            ndcg = evaluate(runs, qrels)["ndcg@10"]
            out["settings"][f"{cap}/{depth}"] = {
                "max_tokens": cap, "depth": depth, "ndcg@10": ndcg,
                **{f"blend{w}_ndcg@10": evaluate(blends[w], qrels)["ndcg@10"] for w in BLENDS},
                "depth20_ms_p50": statistics.median(costs) * 1000,
                "depth20_ms_p99": percentiles(costs).get("p99", 0.0) * 1000,
            }
            blended = ", ".join(f"{w}: {out['settings'][f'{cap}/{depth}'][f'blend{w}_ndcg@10']:.4f}" for w in BLENDS)
            print(f"  {ds.name:10s} rerank tokens {cap:4d} depth {depth:3d}: nDCG@10 {ndcg:.4f}, blended {blended} "
                  f"(fused {base:.4f}); depth-20 window {statistics.median(costs) * 1000:.0f} ms", flush=True)
    return out


#: Token vectors kept per chunk in the stored-vector study (the dense default is marked in the report).
STORED_CAPS = (8, 16, 32, 64)


def stored_study(ds: Dataset, candidates: Mapping[str, list[dict[str, Any]]], *,
                 caps: Sequence[int] = STORED_CAPS, depth: int = 20) -> dict[str, Any]:
    """nDCG@10 of the fused candidates with the top ``depth`` reordered by MaxSim over token
    vectors as the dense service stores them (``compress`` at each cap, from the encoder at the
    dense service's 256-token window), alone and blended at each weight."""
    from services.common.late_interaction import compress, maxsim, query_tokens
    from services.common.models import load_encoder

    encoder = load_encoder()
    qrels = {q: ds.qrels[q] for q in candidates}
    base = evaluate({q: dedupe(doc_of(r) for r in rs) for q, rs in candidates.items()}, qrels)["ndcg@10"]
    texts = sorted({r["content"] for rs in candidates.values() for r in rs[:depth]})
    states = dict(zip(texts, encoder.pooled_and_tokens(texts)[1], strict=True))
    queries = {q: query_tokens(encoder.pooled_and_tokens([ds.queries[q]])[1][0]) for q in candidates}
    out: dict[str, Any] = {"fused_ndcg@10": base, "depth": depth, "settings": {}}
    for cap in caps:
        kept = {t: compress(st, cap) for t, st in states.items()}
        runs: dict[float, dict[str, list[str]]] = {w: {} for w in (*BLENDS, 1.0)}
        for qid, results in candidates.items():
            window, tail = results[:depth], [doc_of(r) for r in results[depth:]]
            scores = [maxsim(queries[qid], kept[r["content"]]) for r in window]
            for w in runs:
                mixed = blend(scores, [r["score"] for r in window], w)
                order = sorted(range(len(window)), key=lambda i: -mixed[i])
                runs[w][qid] = dedupe([doc_of(window[i]) for i in order] + tail)
        out["settings"][str(cap)] = {
            "tokens": cap, "mean_tokens": float(statistics.mean(len(v) for v in kept.values())),
            "ndcg@10": evaluate(runs[1.0], qrels)["ndcg@10"],
            **{f"blend{w}_ndcg@10": evaluate(runs[w], qrels)["ndcg@10"] for w in BLENDS},
        }
        row = out["settings"][str(cap)]
        print(f"  {ds.name:10s} stored tokens {cap:3d}: alone {row['ndcg@10']:.4f}, "
              + ", ".join(f"{w}: {row[f'blend{w}_ndcg@10']:.4f}" for w in BLENDS) + f" (fused {base:.4f})", flush=True)
    return out


def peer_quality(data_dir: Path, ds: Dataset, index_id: str, max_queries: int | None) -> dict[str, Any]:
    """nDCG@10 / recall@100 of the LlamaIndex peer over the same chunks (read from Quarry's shard)."""
    from bench.peer import PeerRetriever, read_chunks

    queries = {q: t for q, t in ds.queries.items() if q in ds.qrels}
    if max_queries:
        queries = dict(list(queries.items())[:max_queries])
    peer = PeerRetriever(read_chunks(data_dir / "dense", index_id), top_k=100)
    try:
        runs = {q: dedupe(n[:-4] if n.endswith(".txt") else n for n in peer.retrieve(t)) for q, t in queries.items()}
    finally:
        peer.close()
    return evaluate(runs, {q: ds.qrels[q] for q in queries})


Candidates = dict[str, list[dict[str, Any]]]


async def measure_datasets(stack: Stack, datasets: Sequence[Dataset], configs: Sequence[str],
                           max_queries: int | None) -> tuple[dict[str, Any], dict[str, Candidates]]:
    """Every configuration on every dataset's index (ingested first unless the stack has it);
    returns the results per dataset and the default hybrid's candidates per dataset."""
    results: dict[str, Any] = {}
    candidates: dict[str, Candidates] = {}
    async with QuarryClient(stack.base_url) as client:
        # One index per dataset, synced concurrently: one more ingest worker per missing index.
        found = [await client.index_by_name(f"beir-{ds.name}") for ds in datasets]
        missing = sum(1 for f in found if not f or f.get("sync_status") != "succeeded")
        for _ in range(missing - 1):
            await asyncio.to_thread(stack.start_ingest)
        ingested = await asyncio.gather(*(ensure_index(client, ds) for ds in datasets))
        for ds, (index_id, ingest) in zip(datasets, ingested, strict=True):
            results[ds.name], candidates[ds.name] = await evaluate_dataset(client, ds, index_id, configs, max_queries)
            results[ds.name]["ingest"] = ingest
    return results, candidates


def run(datasets: Sequence[Dataset], work_dir: Path, *, smoke: bool = False, max_queries: int | None = None,
        study: bool = True, peer: bool = True, token_caps: Sequence[int] = (128,),
        depths: Sequence[int] = (10, 20), batch_size: int = 32,
        configs: Sequence[str] | None = None) -> dict[str, Any]:
    """The whole quality benchmark (or the named ``configs``); returns the JSON-ready result."""
    configs = tuple(configs) if configs else SMOKE_CONFIGS if smoke else tuple(CONFIGS)
    result: dict[str, Any] = {"configs": list(configs), "datasets": {}}
    candidates: dict[str, dict[str, list[dict[str, Any]]]] = {}

    async def drive(stack: Stack) -> None:
        result["datasets"], found = await measure_datasets(stack, datasets, configs, max_queries)
        candidates.update(found)

    with running_stack(work_dir) as stack:
        asyncio.run(drive(stack))
    for ds in datasets:
        entry = result["datasets"][ds.name]
        if study and candidates[ds.name]:
            entry["rerank_study"] = rerank_study(ds, candidates[ds.name], token_caps=token_caps, depths=depths,
                                                 batch_size=batch_size, timing_queries=5 if smoke else 12)
            entry["stored_study"] = stored_study(ds, candidates[ds.name], caps=(8, 32) if smoke else STORED_CAPS)
        if peer:
            entry["peer"] = peer_quality(work_dir, ds, entry["index_id"], max_queries)
            print(f"  {ds.name:10s} peer (LlamaIndex)  nDCG@10 {entry['peer']['ndcg@10']:.4f}", flush=True)
    return result
