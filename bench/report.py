"""``docs/benchmarks.md`` and ``docs/bench/*.png``, regenerated from ``bench/results/*.json``.

Nothing here measures: it reads the results files, so the page always says what the last run
of each benchmark found, with the command, machine and date that produced it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.meta import RESULTS, ROOT

DOCS = ROOT / "docs" / "benchmarks.md"
PLOTS = ROOT / "docs" / "bench"
QUALITY_ROWS = ("sparse only", "dense only", "hybrid relative_score 0.5/0.5", "hybrid rrf 0.5/0.5",
                "hybrid dbsf 0.5/0.5", "defaults + rerank")


def load(name: str, results: Path = RESULTS) -> dict[str, Any] | None:
    path = results / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _f(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _meta_line(meta: dict[str, Any]) -> str:
    load_avg = meta.get("loadavg_start", [0])[0], meta.get("loadavg_end", [0])[0]
    return (f"Measured {meta['date']} on {meta['cores']} cores ({meta['cpu']}), {meta['memory_gib']} GiB, "
            f"Python {meta['python']}, commit `{meta['commit']}`; 1-minute load average "
            f"{load_avg[0]:.1f} at the start and {load_avg[1]:.1f} at the end; "
            f"wall {meta.get('wall_seconds', 0):.0f} s. "
            f"Command: `{meta['command']}`.")


# -- plots -------------------------------------------------------------------------------------


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_quality(quality: dict[str, Any], out: Path) -> None:
    plt = _plt()
    datasets = list(quality["datasets"])
    rows = [r for r in QUALITY_ROWS if any(r in quality["datasets"][d]["configs"] for d in datasets)]
    fig, ax = plt.subplots(figsize=(10, 4.5))
    width = 0.8 / (len(rows) + 1)
    lowest = 1.0
    for i, row in enumerate([*rows, "peer"]):
        values = []
        for d in datasets:
            entry = quality["datasets"][d]
            values.append((entry.get("peer") or {}).get("ndcg@10", 0) if row == "peer"
                          else entry["configs"].get(row, {}).get("ndcg@10", 0))
        lowest = min(lowest, *values)
        ax.bar([x + i * width for x in range(len(datasets))], values, width,
               label="LlamaIndex peer" if row == "peer" else row)
    ax.set_ylim(bottom=max(0.0, lowest - 0.05))  # differences of a few points stay visible
    ax.set_xticks([x + width * len(rows) / 2 for x in range(len(datasets))], datasets)
    ax.set_ylabel("nDCG@10")
    ax.set_title("Quality per configuration and dataset (through the HTTP API)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def plot_concurrency(speed: dict[str, Any], out: Path) -> None:
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for mode, by_c in speed["quarry"].items():
        levels = sorted(by_c, key=int)
        xs = [int(c) for c in levels]
        line = axes[0].plot(xs, [by_c[c].get("p50", 0) for c in levels], marker="o", label=f"{mode} p50")[0]
        axes[0].plot(xs, [by_c[c].get("p99", 0) for c in levels], ls="--", color=line.get_color(),
                     label=f"{mode} p99")
        axes[1].plot(xs, [by_c[c]["throughput_rps"] for c in levels], marker="o", label=mode)
    for ax, label in ((axes[0], "latency (ms, log)"), (axes[1], "throughput (req/s, log)")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("concurrent clients (closed loop)")
        ax.set_ylabel(label)
    axes[0].legend(fontsize=6, ncol=2)
    axes[1].legend(fontsize=7)
    fig.suptitle(f"Latency and throughput vs concurrency, {speed.get('chunks', 0):,} chunks")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def plot_scale(speed: dict[str, Any], out: Path) -> None:
    plt = _plt()
    points = speed["scale"]
    xs = [p["chunks"] for p in points]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for mode in ("retrieve", "retrieve+rerank"):
        line = axes[0].plot(xs, [p[mode].get("p50", 0) for p in points], marker="o", label=f"{mode} p50")[0]
        axes[0].plot(xs, [p[mode].get("p99", 0) for p in points], ls="--", color=line.get_color(),
                     label=f"{mode} p99")
    axes[0].set_xlabel("chunks in the index")
    axes[0].set_ylabel("latency at concurrency 1 (ms)")
    axes[0].legend(fontsize=7)
    for name in sorted({n for p in points for n in p["rss_mb"]}):
        axes[1].plot(xs, [p["rss_mb"].get(name, 0) for p in points], marker="o", label=name)
    axes[1].set_xlabel("chunks in the index")
    axes[1].set_ylabel("RSS (MiB)")
    axes[1].legend(fontsize=7)
    fig.suptitle("Latency and memory vs corpus size")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def stage_breakdown(speed: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Median ms per stage at concurrency 1: query embedding, vector search, BM25 (concurrent
    with the dense leg), fusion, rerank, the gateway's own work around them (its ``total``
    less ``retrieve``), and HTTP plus the client (the client's wall time less ``total``)."""
    out = {}
    for mode in ("retrieve", "retrieve+rerank"):
        r = speed["quarry"].get(mode, {}).get("1")
        if not r or "stages_ms_p50" not in r:
            continue
        st = r["stages_ms_p50"]
        legs = max(st.get("dense", 0), st.get("sparse", 0))
        out[mode] = {
            "embed query": st.get("dense_embed", 0),
            "vector search + gRPC": max(0.0, st.get("dense", 0) - st.get("dense_embed", 0)),
            "BM25 beyond dense": max(0.0, st.get("sparse", 0) - st.get("dense", 0)),
            "fusion": st.get("fusion", 0),
            "rerank": st.get("rerank", 0),
            "gateway (auth, index, cache, shaping)": max(0.0, st.get("total", 0) - st.get("retrieve", legs)),
            "HTTP + client": max(0.0, r.get("p50", 0) - st.get("total", st.get("retrieve", legs))),
        }
    return out


def plot_stages(speed: dict[str, Any], out: Path) -> None:
    """One panel per request kind (their scales differ by 10-100x): Quarry's stages stacked, the floor beside."""
    plt = _plt()
    stages = stage_breakdown(speed)
    floor = speed.get("floor", {})
    fig, axes = plt.subplots(1, max(1, len(stages)), figsize=(10, 4.2), squeeze=False)
    for ax, (mode, parts) in zip(axes[0], stages.items(), strict=False):
        bottom = 0.0
        for name, value in parts.items():
            ax.bar(["Quarry"], [value], bottom=bottom, label=name)
            bottom += value
        ax.bar(["in-process floor"], [floor.get(mode, {}).get("p50", 0)], color="grey", label="floor (total)")
        ax.set_title(mode)
        ax.set_ylabel("median ms at concurrency 1")
    axes[0][0].legend(fontsize=7)
    fig.suptitle("Where a request's time goes (medians of the per-stage latency the API reports)")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def plot_rerank(quality: dict[str, Any], out: Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(10, 5))
    for name, entry in quality["datasets"].items():
        study = entry.get("rerank_study")
        if not study:
            continue
        settings = sorted(study["settings"].values(), key=lambda s: (s["max_tokens"], s["depth"]))
        kinds = ["ndcg@10", *sorted(k for k in settings[0] if k.startswith("blend"))]
        labels, gains = [], []
        for s in settings:
            for kind in kinds:
                w = "alone" if kind == "ndcg@10" else "w=" + kind.removeprefix("blend").removesuffix("_ndcg@10")
                labels.append(f"{s['max_tokens']}/{s['depth']} {w}")
                gains.append(100 * (s[kind] / study["fused_ndcg@10"] - 1))
        ax.plot(labels, gains, marker="o", label=name)
    ax.axhline(0, color="black", lw=0.8)
    ax.axhline(-1, color="red", lw=0.8, ls=":")
    ax.tick_params(axis="x", labelrotation=60, labelsize=7)
    ax.set_xlabel("passage token cap / rerank depth, rerank alone or blended with weight w")
    ax.set_ylabel("nDCG@10 change over the fused order (%)")
    ax.set_title("Late-interaction rerank: what each setting buys")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


# -- the page ----------------------------------------------------------------------------------


def quality_section(q: dict[str, Any]) -> list[str]:
    datasets = list(q["datasets"])
    out = ["## Quality", "", _meta_line(q["meta"]), ""]
    header = ["configuration", *[f"{d} nDCG@10" for d in datasets], *[f"{d} R@100" for d in datasets]]
    configs = [c for c in q["configs"] if any(c in q["datasets"][d]["configs"] for d in datasets)]
    rows = []
    for c in configs:
        cells = [c]
        cells += [_f(q["datasets"][d]["configs"].get(c, {}).get("ndcg@10"), 4) for d in datasets]
        cells += [_f(q["datasets"][d]["configs"].get(c, {}).get("recall@100"), 4) for d in datasets]
        rows.append(cells)
    rows.append(["LlamaIndex peer (RRF, same model and chunks)",
                 *[_f((q["datasets"][d].get("peer") or {}).get("ndcg@10"), 4) for d in datasets],
                 *[_f((q["datasets"][d].get("peer") or {}).get("recall@100"), 4) for d in datasets]])
    out += [_table(header, rows), "", "![quality](bench/quality.png)", ""]
    degraded = {(d, c): v["degraded"] for d in datasets for c, v in q["datasets"][d]["configs"].items()
                if v.get("degraded")}
    if degraded:
        out += ["Degraded answers (a leg or the reranker dropped under the request budget): "
                + ", ".join(f"{d}/{c}: {n}" for (d, c), n in degraded.items()) + ".", ""]
    studies = {d: q["datasets"][d]["rerank_study"] for d in datasets if q["datasets"][d].get("rerank_study")}
    if studies:
        names = list(studies)
        first = next(iter(studies.values()))["settings"]
        keys = sorted(first, key=lambda k: tuple(int(x) for x in k.split("/")))
        kinds = [("ndcg@10", "rerank alone")] + [
            (k, "blend w=" + k.removeprefix("blend").removesuffix("_ndcg@10"))
            for k in first[keys[0]] if k.startswith("blend")]
        out += ["### Rerank study (late interaction, in process over the default hybrid's candidates)", "",
                "nDCG@10 of the default hybrid's fused candidates with the top `depth` reranked, per passage "
                "token cap / depth, ordered by the rerank score alone or by the blend "
                "`w * minmax(rerank) + (1 - w) * minmax(fused)` within the window (what the gateway serves, "
                "`QUARRY_GATEWAY_DEFAULTS__RERANK_BLEND`). `fused` is the order before reranking; the change "
                "columns are relative to it. Cost: CPU-bound scoring of an uncached 20-passage window, "
                "median ms.", ""]
        header = ["setting", *names, "mean change", "worst change", *[f"{d} ms" for d in names]]
        rows = [["fused", *[_f(studies[d]["fused_ndcg@10"], 4) for d in names], "", "",
                 *["" for _ in names]]]
        for k in keys:
            for key, label in kinds:
                values = [studies[d]["settings"][k][key] for d in names]
                changes = [v / studies[d]["fused_ndcg@10"] - 1 for v, d in zip(values, names, strict=True)]
                rows.append([f"{k} {label}", *[_f(v, 4) for v in values],
                             f"{100 * sum(changes) / len(changes):+.1f} %", f"{100 * min(changes):+.1f} %",
                             *[_f(studies[d]["settings"][k]["depth20_ms_p50"], 0) for d in names]])
        out += [_table(header, rows), "", "![rerank](bench/rerank.png)", ""]
    out += stored_study_section(q)
    if q.get("notes"):
        out += ["Notes: " + " ".join(q["notes"]), ""]
    return out


def stored_study_section(q: dict[str, Any]) -> list[str]:
    """The stored token vectors study: nDCG@10 per cap and blend weight, per dataset."""
    studies = {d: e["stored_study"] for d, e in q["datasets"].items() if e.get("stored_study")}
    if not studies:
        return []
    names = list(studies)
    first = next(iter(studies.values()))
    caps = sorted(first["settings"], key=int)
    kinds = [("ndcg@10", "alone")] + [(k, "blend w=" + k.removeprefix("blend").removesuffix("_ndcg@10"))
                                      for k in first["settings"][caps[0]] if k.startswith("blend")]
    rows = [["fused", *[_f(studies[d]["fused_ndcg@10"], 4) for d in names], "", "", *["" for _ in names]]]
    for cap in caps:
        for key, label in kinds:
            values = [studies[d]["settings"][cap][key] for d in names]
            changes = [v / studies[d]["fused_ndcg@10"] - 1 for v, d in zip(values, names, strict=True)]
            rows.append([f"{cap} tokens, {label}", *[_f(v, 4) for v in values],
                         f"{100 * sum(changes) / len(changes):+.2f} %", f"{100 * min(changes):+.2f} %",
                         *[_f(studies[d]["settings"][cap]["mean_tokens"], 1) for d in names]])
    return ["### Stored token vectors study (in process over the default hybrid's candidates)", "",
            f"The top {first['depth']} fused candidates reordered by MaxSim over each chunk's token vectors as "
            "the dense service stores them (content tokens, stop words and punctuation dropped, pooled by "
            "k-means to at most the cap; `services/common/late_interaction.py`), alone or blended with the "
            "fused score. Change columns are relative to the fused order; the last columns give the mean "
            "vectors a chunk keeps.", "",
            _table(["setting", *names, "mean change", "worst change", *[f"{d} kept" for d in names]], rows), ""]


def adopted_section(a: dict[str, Any]) -> list[str]:
    """The defaults as adopted after the study, measured end to end (``after-defaults/quality.json``)."""
    datasets = list(a["datasets"])
    configs = [c for c in a["configs"] if all(c in a["datasets"][d]["configs"] for d in datasets)]
    rows = [[c, *[_f(a["datasets"][d]["configs"][c]["ndcg@10"], 4) for d in datasets]] for c in configs]
    if "hybrid dbsf 0.5/0.5" in configs and "defaults + rerank" in configs:
        changes = [a["datasets"][d]["configs"]["defaults + rerank"]["ndcg@10"]
                   / a["datasets"][d]["configs"]["hybrid dbsf 0.5/0.5"]["ndcg@10"] - 1 for d in datasets]
        rows.append(["change from the reranker", *[f"{100 * c:+.2f} %" for c in changes]])
    degraded = [f"{d}/{c}: {v['degraded']}" for d in datasets for c, v in a["datasets"][d]["configs"].items()]
    return ["### The adopted defaults, end to end", "", _meta_line(a["meta"]), "",
            _table(["nDCG@10", *datasets], rows), "",
            "Degraded answers per dataset/configuration: " + ", ".join(degraded) + ".", "",
            *stored_study_section(a)]


def stored_rerank_section(r: dict[str, Any]) -> list[str]:
    """Rerank on vs off through the API on one index, in one run (``stored-rerank/speed.json``)."""
    q = r["quarry"]
    rows = []
    for c in r["concurrency"]:
        off, on = q["retrieve"][str(c)], q["retrieve+rerank"][str(c)]
        rows.append([str(c), _f(off.get("p50")), _f(on.get("p50")),
                     _f(on.get("p50", 0) / off["p50"], 2) if off.get("p50") else "-", _f(off.get("p99")),
                     _f(on.get("p99")), _f(off["throughput_rps"]), _f(on["throughput_rps"]), str(off["degraded"]),
                     str(on["degraded"]), f"{on['requests']:,}", _f((on.get("stages_ms_p50") or {}).get("rerank"), 2)])
    out = [f"### Rerank on vs off ({r['chunks']:,} synthetic chunks, stored token vectors)", "", _meta_line(r["meta"]),
           "", f"Closed loop, {r['duration_s']:.0f} s per cell, every query new (no cache hits), the same run and "
           "index for both columns. `rerank` stage: the gateway's time in the rerank step (the LateScores call).", "",
           _table(["clients", "off p50 ms", "on p50 ms", "on / off p50", "off p99 ms", "on p99 ms", "off req/s",
                   "on req/s", "off degraded", "on degraded", "on requests", "rerank stage p50 ms"], rows), ""]
    floor = r.get("floor") or {}
    if floor.get("retrieve") and floor.get("retrieve+rerank"):
        out += [f"In-process floor (same work, no network, one client): {_f(floor['retrieve'].get('p50'))} ms without "
                f"rerank, {_f(floor['retrieve+rerank'].get('p50'))} ms with it.", ""]
    return out


def speed_section(s: dict[str, Any]) -> list[str]:
    out = ["## Speed", "", _meta_line(s["meta"]), ""]
    if "quarry" in s:
        out += [f"### Load ({s['chunks']:,} synthetic chunks, closed loop, {s['duration_s']:.0f} s per cell)", ""]
        rows = []
        for mode, by_c in s["quarry"].items():
            for c in sorted(by_c, key=int):
                r = by_c[c]
                rows.append([mode, c, _f(r.get("p50")), _f(r.get("p90")), _f(r.get("p99")),
                             _f(r["throughput_rps"]), str(r["requests"]), str(r["errors"]), str(r.get("degraded", 0))])
        out += [_table(["mode", "clients", "p50 ms", "p90 ms", "p99 ms", "req/s", "requests", "errors", "degraded"],
                       rows), "", "![concurrency](bench/concurrency.png)", ""]
    floor = s.get("floor")
    if floor and "quarry" in s:
        q1 = s["quarry"].get("retrieve", {}).get("1", {})
        r1 = s["quarry"].get("retrieve+rerank", {}).get("1", {})
        rows = [["retrieve, no rerank", _f(q1.get("p50")), _f(floor["retrieve"].get("p50")),
                 _f(q1.get("p50", 0) / max(floor["retrieve"].get("p50", 1e-9), 1e-9), 2)],
                ["retrieve + rerank", _f(r1.get("p50")), _f(floor["retrieve+rerank"].get("p50")),
                 _f(r1.get("p50", 0) / max(floor["retrieve+rerank"].get("p50", 1e-9), 1e-9), 2)]]
        out += ["### Quarry vs the in-process floor (concurrency 1)", "",
                "Floor: the same query's work in one process with no network (embed with the packaged MiniLM, "
                "embedded Qdrant search, tantivy BM25, the gateway's default fusion; plus the late-interaction "
                "reranker over the same window, blended as the gateway does, for the rerank row), on the same "
                "index files, measured in the same run right after the stack stopped.", "",
                _table(["request", "Quarry p50 ms", "floor p50 ms", "Quarry / floor"], rows), "",
                "![stages](bench/stages.png)", ""]
    peer = s.get("peer")
    if peer and "quarry" in s:
        rows = []
        for c in sorted(peer["load"], key=int):
            p, q = peer["load"][c], s["quarry"].get("retrieve+rerank", {}).get(c, {})
            qn = s["quarry"].get("retrieve", {}).get(c, {})
            rows.append([c, _f(qn.get("p50")), _f(q.get("p50")), _f(p.get("p50")), _f(qn.get("p99")),
                         _f(q.get("p99")), _f(p.get("p99")), _f(qn.get("throughput_rps")),
                         _f(q.get("throughput_rps")), _f(p.get("throughput_rps"))])
        out += ["### Quarry vs the LlamaIndex peer (same model, same chunks)", "",
                f"Peer built in {peer['build_seconds']:.0f} s from the chunks and vectors Quarry stored; "
                "queried from threads in one process.", "",
                _table(["clients", "Quarry p50", "Quarry+rerank p50", "peer p50", "Quarry p99", "Quarry+rerank p99",
                        "peer p99", "Quarry req/s", "Quarry+rerank req/s", "peer req/s"], rows), ""]
    if s.get("scale"):
        rows = [[f"{p['chunks']:,}", _f(p["retrieve"].get("p50")), _f(p["retrieve"].get("p99")),
                 _f(p["retrieve+rerank"].get("p50")), _f(p["retrieve+rerank"].get("p99")),
                 ", ".join(f"{k} {v:.0f}" for k, v in sorted(p["rss_mb"].items()))] for p in s["scale"]]
        out += ["### Scale (one index grown step by step; concurrency 1)", "",
                *([_meta_line(s["scale_meta"]), ""] if "scale_meta" in s else []),
                _table(["chunks", "retrieve p50", "retrieve p99", "+rerank p50", "+rerank p99", "RSS MiB per process"],
                       rows), "", "![scale](bench/scale.png)", ""]
    if s.get("ingest"):
        runs = [("first sync" if "without_token_vectors" not in s else "with stored token vectors (default)",
                 s["ingest"], s["raw_embedding"])]
        if s.get("without_token_vectors"):
            w = s["without_token_vectors"]
            runs.append(("without them (QUARRY_DENSE_TOKEN_VECTORS=0)", w["ingest"], w["raw_embedding"]))
        out += ["### Ingest", "",
                *([_meta_line(s["ingest_meta"]), ""] if "ingest_meta" in s else []),
                _table(["sync (end to end)", "chunks", "files", "upload s", "sync s", "chunks/s",
                        "raw embedding chunks/s", "sync / raw", "dense data KiB/chunk"],
                       [[label, f"{i['chunks']:,}", f"{i['files']:,}", _f(i["upload_seconds"]),
                         _f(i["sync_seconds"]), _f(i["chunks_per_s"]), _f(raw["chunks_per_s"]),
                         _f(i["chunks_per_s"] / raw["chunks_per_s"], 2),
                         _f(i["dense_disk_bytes"] / i["chunks"] / 1024, 1) if i.get("dense_disk_bytes") else "-"]
                        for label, i, raw in runs]), ""]
    return out


def rerank_cost_section(r: dict[str, Any]) -> list[str]:
    rows = [[str(x["max_tokens"]), "none (32-row batches)" if x["batch_tokens"] is None else str(x["batch_tokens"]),
             _f(x["median"], 0), _f(x["min"], 0)] for x in r["rows"]]
    return ["### Rerank cost by token cap and batching", "", _meta_line(r["meta"]), "",
            f"CPU ms (one onnxruntime thread, `time.process_time`) to score a window of 20 uncached "
            f"{r['dataset']} passages, over {r['windows']} windows.", "",
            _table(["passage token cap", "padded-token budget per model run", "median CPU ms", "min CPU ms"], rows),
            ""]


def engines_section(e: dict[str, Any]) -> list[str]:
    from bench.engines import quality_rows

    out = ["## The cluster engines beside the embedded stack", "", _meta_line(e["meta"]), "",
           "The same corpora and queries through the same gateway code, once on the embedded stack (tantivy, "
           "SQLite, in-process cache) and once on the cluster engines (a real OpenSearch 2.19 node, PostgreSQL, "
           "Redis); dense is the embedded Qdrant in both, so every difference comes from the cluster engines.", ""]
    if e.get("quality"):
        out += ["### Quality (nDCG@10)", "",
                _table(["dataset", "configuration", "embedded", "cluster", "change"], quality_rows(e["quality"])), ""]
    sp = e.get("speed")
    if sp:
        ing, rb = sp["ingest"], sp.get("rebuild") or {}
        out += ["### Speed", "",
                f"A sync of {sp['first']:,} chunks from empty (end to end: parse, chunk, embed, both engines), then "
                f"an index grown to {sp['chunks']:,} chunks on the embedded stack, copied, and its keyword index "
                "rebuilt into OpenSearch from the catalog (`POST /indexes/{id}/rebuild`, sparse only); "
                "closed-loop retrieves (fresh queries, no rerank) with both stacks up.", "",
                _table(["figure", "embedded (tantivy)", "cluster (OpenSearch)"], [
                    ["sync from empty, chunks/s", _f(ing["embedded"]["chunks_per_s"]),
                     _f(ing["cluster"]["chunks_per_s"])],
                    ["keyword rebuild from the catalog, chunks/s", "", _f(rb.get("chunks_per_s"), 0)],
                    *[[f"retrieve c={c}: p50 / p99 ms, req/s",
                       f"{_f(sp['load']['embedded'][c]['p50'])} / {_f(sp['load']['embedded'][c]['p99'])}, "
                       f"{_f(sp['load']['embedded'][c]['throughput_rps'])}",
                       f"{_f(sp['load']['cluster'][c]['p50'])} / {_f(sp['load']['cluster'][c]['p99'])}, "
                       f"{_f(sp['load']['cluster'][c]['throughput_rps'])}"] for c in sp["load"]["embedded"]],
                    ["sparse process RSS, MiB", _f(sp["rss_mb"]["embedded"]["sparse"], 0),
                     _f(sp["rss_mb"]["cluster"]["sparse"], 0)],
                ]), ""]
    return out


def telemetry_section(t: dict[str, Any]) -> list[str]:
    from bench.telemetry import rows

    return ["## Telemetry overhead", "", _meta_line(t["meta"]), "",
            f"One index of {t['chunks']:,} synthetic chunks served in three configurations, each started in turn, "
            f"{t['rounds']} interleaved rounds of {t['duration_s']:.0f} s per measurement (medians over the rounds): "
            "`off` (`QUARRY_METRICS_ENABLED=false`, no tracing), `metrics` (the default), `metrics+traces` (every "
            f"span exported over OTLP to a collector on the same machine; {t['spans_received']:,} spans received). "
            "Closed-loop retrieves, fresh queries, no rerank.", "",
            _table(["configuration", "c=1 p50 ms", "c=1 p99 ms", f"c={t['concurrency']} req/s", "p50 vs off",
                    "throughput vs off"], rows(t)), ""]


def surfaces_section(t: dict[str, Any]) -> list[str]:
    from bench.surfaces import rows

    n = t["concurrency"]
    return ["## gRPC vs HTTP", "", _meta_line(t["meta"]), "",
            f"The same retrieves over the gateway's two surfaces, one stack, one index of {t['chunks']:,} synthetic "
            f"chunks, {t['rounds']} interleaved rounds of {t['duration_s']:.0f} s per measurement (medians over the "
            "rounds). Closed-loop clients, fresh queries (no cache hit), rerank off (the transport's cost, not the "
            f"model's). HTTP: httpx with a keep-alive pool of {n} connections; gRPC: one grpc.aio channel.", "",
            _table(["surface", "c=1 p50 ms", "c=1 p99 ms", f"c={n} p50 ms", f"c={n} p99 ms", f"c={n} req/s"],
                   rows(t)), ""]


def render(results: Path = RESULTS, docs: Path = DOCS, plots: Path = PLOTS) -> str:
    """Write the plots and the page; returns the page."""
    plots.mkdir(parents=True, exist_ok=True)
    quality, speed, notes = load("quality", results), load("speed", results) or {}, results / "NOTES.md"
    # `scale` and `ingest` runs of their own replace the figures a `load` run recorded on the way.
    for name, keys in (("scale", ("scale",)), ("ingest", ("ingest", "raw_embedding", "without_token_vectors"))):
        extra = load(name, results)
        if extra:
            speed.update({k: extra[k] for k in keys if k in extra})
            speed[f"{name}_meta"] = extra["meta"]
            speed.setdefault("meta", extra["meta"])
    lines = ["# Benchmarks", "",
             "Generated by `quarry bench report` from `bench/results/*.json`; do not edit by hand "
             "(the analysis lives in `bench/results/NOTES.md`, included below).", ""]
    if notes.exists():
        lines += [notes.read_text().strip(), ""]
    if quality:
        plot_quality(quality, plots / "quality.png")
        if any(d.get("rerank_study") for d in quality["datasets"].values()):
            plot_rerank(quality, plots / "rerank.png")
        lines += quality_section(quality)
    adopted = load("quality", results / "after-defaults")
    if adopted:
        lines += adopted_section(adopted)
    stored = load("speed", results / "stored-rerank")
    if stored:
        lines += stored_rerank_section(stored)
    rerank = load("rerank", results)
    if rerank:
        lines += rerank_cost_section(rerank)
    if speed.get("meta"):
        if "quarry" in speed:
            plot_concurrency(speed, plots / "concurrency.png")
            plot_stages(speed, plots / "stages.png")
        if len(speed.get("scale", [])) > 0:
            plot_scale(speed, plots / "scale.png")
        lines += speed_section(speed)
    engines = load("engines", results)
    if engines:
        lines += engines_section(engines)
    telemetry = load("telemetry", results)
    if telemetry:
        lines += telemetry_section(telemetry)
    surfaces = load("surfaces", results)
    if surfaces:
        lines += surfaces_section(surfaces)
    page = "\n".join(lines).rstrip() + "\n"
    docs.write_text(page)
    return page
