"""The benchmark harness end to end on a tiny corpus: every mode runs through the real stack and
writes well-formed results and a page. Asserts shapes and sanity, never timings."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path
from typing import Any

import pytest

from bench import load, quality, report
from bench.corpus import Dataset, Vocabulary
from bench.metrics import dedupe, evaluate, ndcg_at_k, percentiles, recall_at_k

pytestmark = pytest.mark.e2e



def installed(module: str) -> bool:
    """Whether ``module`` can be imported (the peer and the plots need the `bench` extra)."""
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # its parent package is missing
        return False


HAS_PEER = installed("llama_index.core")
HAS_PLOTS = installed("matplotlib")

DOCS = {
    "d1": "Photovoltaic solar panels convert sunlight into electricity with silicon cells.",
    "d2": "Volcanoes erupt when magma from the mantle reaches the surface of the earth.",
    "d3": "Sourdough bread rises with a starter of wild yeast and lactic acid bacteria.",
    "d4": "The borrow checker of the Rust language enforces ownership at compile time.",
    "d5": "Glaciers retreat as the climate warms and meltwater lakes grow in the valleys.",
}
QUERIES = {"q1": "how do solar cells make electricity", "q2": "why does bread rise", "q3": "melting glaciers"}
QRELS = {"q1": {"d1": 1}, "q2": {"d3": 2}, "q3": {"d5": 1}}


def write_beir(root: Path) -> Dataset:
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": d, "title": "", "text": t}) + "\n" for d, t in DOCS.items()))
    (root / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in QUERIES.items()))
    rows = [f"{q}\t{d}\t{g}" for q, rels in QRELS.items() for d, g in rels.items()]
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "\n".join(rows) + "\n")
    return Dataset(root)


def finite_numbers(value: Any) -> bool:
    if isinstance(value, dict):
        return all(finite_numbers(v) for v in value.values())
    if isinstance(value, list):
        return all(finite_numbers(v) for v in value)
    return not isinstance(value, float) or math.isfinite(value)


def test_metrics_follow_the_standard_definitions() -> None:
    qrels = {"a": 3, "b": 1, "c": 0}
    assert ndcg_at_k(["a", "b"], qrels, 10) == pytest.approx(1.0)
    swapped = (1 + 3 / math.log2(3)) / (3 + 1 / math.log2(3))
    assert ndcg_at_k(["b", "a"], qrels, 10) == pytest.approx(swapped)
    assert ndcg_at_k(["x", "a"], qrels, 1) == 0.0
    assert recall_at_k(["a", "x", "c"], qrels, 100) == pytest.approx(0.5)
    assert dedupe(["a", "b", "a", "c", "b"]) == ["a", "b", "c"]
    assert evaluate({"q": ["a"]}, {"q": qrels, "unjudged": {"z": 0}})["queries"] == 1
    assert percentiles([5.0, 1.0, 3.0, 2.0, 4.0]) == {"p50": 3.0, "p90": 5.0, "p99": 5.0}


def test_every_mode_runs_end_to_end(tmp_path: Path) -> None:
    ds = write_beir(tmp_path / "tiny")
    q = quality.run([ds], tmp_path / "quality", smoke=True, peer=HAS_PEER, token_caps=(64,), depths=(3,))
    entry = q["datasets"]["tiny"]
    assert set(entry["configs"]) == set(quality.SMOKE_CONFIGS)
    for scores in entry["configs"].values():
        assert 0.0 <= scores["ndcg@10"] <= 1.0 and 0.0 <= scores["recall@100"] <= 1.0
        assert scores["queries"] == len(QUERIES)
    # On five unrelated documents each leg finds the judged one somewhere in its top 100.
    assert entry["configs"]["hybrid relative_score 0.5/0.5"]["recall@100"] == 1.0
    assert set(entry["rerank_study"]["settings"]) == {"64/3"}
    if HAS_PEER:
        assert 0.0 <= entry["peer"]["ndcg@10"] <= 1.0

    vocab = Vocabulary.from_datasets([ds])
    speed = load.run_speed(vocab, tmp_path / "speed", sizes=[5, 15], concurrencies=[1, 2], duration=1,
                           peer=HAS_PEER)
    assert [p["chunks"] for p in speed["scale"]] == sorted(p["chunks"] for p in speed["scale"])
    assert speed["scale"][0]["chunks"] >= 5 and speed["chunks"] >= 15
    assert {"dense", "sparse", "rerank", "files", "gateway", "ingest"} <= set(speed["rss_mb"])
    assert set(speed["quarry"]) == set(load.RETRIEVE_MODES + load.FILE_MODES)
    for mode, by_c in speed["quarry"].items():
        assert set(by_c) == {"1", "2"}
        for cell in by_c.values():
            assert cell["requests"] > 0 and cell["errors"] == 0, (mode, cell)
    assert speed["quarry"]["cache hit"]["1"]["cached"] == speed["quarry"]["cache hit"]["1"]["requests"]
    assert speed["quarry"]["retrieve"]["1"]["cached"] == 0
    assert speed["floor"]["retrieve"]["requests"] > 0 and speed["floor"]["retrieve+rerank"]["requests"] > 0
    assert speed["raw_embedding"]["chunks_per_s"] > 0 and speed["ingest"]["chunks"] >= 5
    if HAS_PEER:
        assert set(speed["peer"]["load"]) == {"1"}
    # Measured again on the same index, nothing ingested.
    again = load.run_speed(vocab, tmp_path / "speed", sizes=[15], concurrencies=[1], duration=1, peer=False,
                           modes=("retrieve",), reuse=True)
    assert again["reused"]["chunks"] == speed["chunks"] and again["scale"] == [] and "ingest" not in again
    assert again["index_id"] == speed["index_id"] and again["quarry"]["retrieve"]["1"]["requests"] > 0

    results = tmp_path / "results"
    results.mkdir()
    meta = {"date": "today", "cores": 2, "cpu": "cpu", "memory_gib": 1, "python": "3", "commit": "x",
            "command": "quarry bench smoke", "loadavg_start": [0.0], "loadavg_end": [0.0], "wall_seconds": 1.0}
    for name, value in (("quality", q), ("speed", speed)):
        text = json.dumps({**value, "meta": meta})
        assert finite_numbers(json.loads(text))
        (results / f"{name}.json").write_text(text)
    (results / "after-defaults").mkdir()
    (results / "after-defaults" / "quality.json").write_text(json.dumps({**q, "meta": meta}))
    if HAS_PLOTS:
        page = report.render(results, tmp_path / "benchmarks.md", tmp_path / "plots")
        assert "## Quality" in page and "## Speed" in page and "tiny nDCG@10" in page
        assert "### The adopted defaults, end to end" in page and "change from the reranker" in page
        assert {p.name for p in (tmp_path / "plots").glob("*.png")} >= {"quality.png", "concurrency.png",
                                                                        "stages.png", "scale.png"}


def test_telemetry_overhead_runs_each_configuration(tmp_path: Path) -> None:
    from bench import telemetry

    vocab = Vocabulary.from_datasets([write_beir(tmp_path / "tiny")])
    result = telemetry.run(vocab, tmp_path / "work", chunks=10, concurrency=2, duration=1, rounds=1)
    assert set(result["runs"]) == set(telemetry.CONFIGS)
    for runs in result["runs"].values():
        (one,) = runs
        assert one["errors"] == 0 and one["throughput_rps"] > 0 and one["c1_p50_ms"] > 0
    assert result["summary"]["off"]["p50_vs_off"] == 1.0
    assert result["spans_received"] > 0  # only the metrics+traces stack exported spans
    assert [r[0] for r in telemetry.rows(result)] == list(telemetry.CONFIGS)


def test_surfaces_measures_http_and_grpc_in_one_run(tmp_path: Path) -> None:
    from bench import surfaces

    vocab = Vocabulary.from_datasets([write_beir(tmp_path / "tiny")])
    result = surfaces.run(vocab, tmp_path / "work", chunks=10, concurrency=2, duration=1, rounds=1)
    for surface in surfaces.SURFACES:
        (one,) = result["runs"][surface]
        assert one["errors"] == 0 and one["throughput_rps"] > 0 and one["c1_p50_ms"] > 0 and one["cached"] == 0
    assert result["summary"]["grpc_vs_http"]["c1_p50_ms"] > 0
    assert [r[0] for r in surfaces.rows(result)] == ["http", "grpc", "gRPC / HTTP"]


@pytest.mark.skipif(not HAS_PLOTS, reason="matplotlib (the bench extra) renders the report")
def test_the_committed_results_render(tmp_path: Path) -> None:
    page = report.render(Path(report.RESULTS), tmp_path / "benchmarks.md", tmp_path / "plots")
    for section in ("## The cluster engines beside the embedded stack", "## Telemetry overhead", "## gRPC vs HTTP"):
        assert section in page


def test_cli_lists_the_modes_and_names_a_bad_option() -> None:
    from typer.testing import CliRunner

    from services.cli import app

    runner = CliRunner()
    listed = runner.invoke(app, ["bench", "--help"])
    assert listed.exit_code == 0
    for mode in ("quality", "load", "scale", "ingest", "rerank", "engines", "telemetry", "surfaces", "report"):
        assert mode in listed.output
    bad = runner.invoke(app, ["bench", "load", "--sizes", "10,x", "--no-peer"])
    assert bad.exit_code != 0 and "10,x" in bad.output
    unknown = runner.invoke(app, ["bench", "quality", "--no-peer", "--config", "hybrid magic"])
    assert unknown.exit_code != 0 and "hybrid magic" in unknown.output
