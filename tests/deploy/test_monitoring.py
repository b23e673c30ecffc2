"""The monitoring component: what it scrapes exists, and every dashboard query and alert rule
names only metrics (and labels) Quarry really exports (``services.common.telemetry.METRICS``)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.common.telemetry import METRICS
from tests.deploy.manifests import COMBINATIONS, Combination, Doc, quarry_deployments, render

MONITORING = Path(__file__).resolve().parents[2] / "deploy" / "components" / "monitoring"
HISTOGRAM_SUFFIXES = ("_bucket", "_count", "_sum")
#: Series Prometheus itself or prometheus_client's default collectors provide.
STANDARD = {"up"} | {f"process_{n}" for n in ("resident_memory_bytes", "cpu_seconds_total", "open_fds",
                                                "start_time_seconds", "virtual_memory_bytes", "max_fds")}
PROMQL_WORDS = {"sum", "by", "rate", "max", "min", "clamp_min", "histogram_quantile", "topk", "le", "without",
                "avg", "count", "increase", "irate", "on", "ignoring", "and", "or", "unless", "bool", "offset"}
_IDENT = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_SELECTOR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{([^}]*)\}")
_MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)")
_GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")


def _strip_strings(expr: str) -> str:
    return re.sub(r'"[^"]*"', '""', expr)


def _family(name: str) -> str:
    for suffix in HISTOGRAM_SUFFIXES:
        if name.endswith(suffix) and name[: -len(suffix)] in METRICS:
            return name[: -len(suffix)]
    return name


def check_expr(expr: str) -> list[str]:
    """Problems of one PromQL expression: unknown metrics, labels a metric does not have."""
    problems = []
    bare = _strip_strings(expr)
    selectors = {m.group(1): m.group(2) for m in _SELECTOR.finditer(bare)}
    grouping = {w.strip() for g in _GROUPING.findall(bare) for w in g.split(",") if w.strip()}
    bare_no_groups = _GROUPING.sub(" ", bare)
    bare_no_selectors = _SELECTOR.sub(lambda m: m.group(1), bare_no_groups)
    names = {w for w in _IDENT.findall(re.sub(r"\[[^\]]*\]", "", bare_no_selectors))
             if w not in PROMQL_WORDS and not re.fullmatch(r"[0-9e.]+", w)}
    quarry = set()
    for name in names:
        if name.startswith("quarry_"):
            family = _family(name)
            if family not in METRICS:
                problems.append(f"{name} is not exported")
            else:
                quarry.add(family)
        elif name not in STANDARD:
            problems.append(f"{name} is neither a Quarry metric nor a standard series")
    for name, matchers in selectors.items():
        family = _family(name)
        if family in METRICS:
            labels = set(METRICS[family]) | ({"le"} if name.endswith("_bucket") else set())
            problems += [f"{name} has no label {k}" for k in _MATCHER.findall(matchers) for k in [k[0]]
                         if k not in labels and k not in ("job", "pod", "namespace", "instance")]
    if quarry:
        allowed = set().union(*(METRICS[f] for f in quarry)) | {"le", "pod", "job", "namespace", "instance"}
        problems += [f"grouping by {g}, which none of {sorted(quarry)} has" for g in grouping - allowed]
    return problems


def test_the_checker_catches_what_it_should() -> None:
    assert check_expr('sum(rate(quarry_http_requests_total{status=~"5.."}[5m]))') == []
    assert check_expr("quarry_no_such_thing_total") == ["quarry_no_such_thing_total is not exported"]
    assert check_expr('rate(quarry_http_requests_total{colour="red"}[1m])') == \
        ["quarry_http_requests_total has no label colour"]
    assert check_expr("sum by (stage) (rate(quarry_http_requests_total[1m]))") != []
    assert check_expr("histogram_quantile(0.99, sum by (le) (rate(quarry_rerank_seconds_bucket[5m])))") == []


def _dashboard() -> dict[str, Any]:
    return json.loads((MONITORING / "dashboard.json").read_text())


def test_every_dashboard_query_names_exported_metrics() -> None:
    targets = [t["expr"] for p in _dashboard()["panels"] for t in p["targets"]]
    assert len(targets) >= 10
    problems = {e: check_expr(e) for e in targets}
    assert not {e: p for e, p in problems.items() if p}
    used = {_family(n) for e in targets for n in _IDENT.findall(e) if n.startswith("quarry_")}
    assert used == set(METRICS), f"metrics without a panel: {sorted(set(METRICS) - used)}"


def test_every_alert_names_exported_metrics() -> None:
    rules = yaml.safe_load((MONITORING / "rules.yaml").read_text())
    alerts = {r["alert"]: r["expr"] for g in rules["spec"]["groups"] for r in g["rules"]}
    wanted = {"QuarryHighErrorRate", "QuarryDegradedAnswers", "QuarryIngestBacklogOld", "QuarryProcessDown"}
    assert wanted <= set(alerts)
    assert not {a: check_expr(e) for a, e in alerts.items() if check_expr(e)}


def test_keda_scales_ingest_on_the_backlog_metric() -> None:
    scaled = yaml.safe_load((MONITORING / "keda.yaml").read_text())
    assert scaled["spec"]["scaleTargetRef"]["name"] == "quarry-ingest"
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "prometheus" and check_expr(trigger["metadata"]["query"]) == []
    assert "quarry_ingest_queued_items" in trigger["metadata"]["query"]


@pytest.mark.parametrize("combo", [c for c in COMBINATIONS if c.components and "monitoring" in c.components
                                   and len(c.components) == 1], ids=lambda c: c.id)
def test_the_pod_monitor_scrapes_ports_every_process_has(combo: Combination, tmp_path: Path) -> None:
    docs: list[Doc] = render(combo, tmp_path)
    (monitor,) = [d for d in docs if d["kind"] == "PodMonitor"]
    ports = {e["port"] for e in monitor["spec"]["podMetricsEndpoints"]}
    for name, deployment in quarry_deployments(docs).items():
        template = deployment["spec"]["template"]
        selector = monitor["spec"]["selector"]["matchLabels"]
        assert all(template["metadata"]["labels"].get(k) == v for k, v in selector.items())
        (container,) = template["spec"]["containers"]
        named = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
        assert ports & set(named), f"{name} exposes none of {ports}"
        annotations = template["metadata"]["annotations"]
        assert int(annotations["prometheus.io/port"]) in named.values()
        env = {e["name"]: e.get("value") for e in container["env"]}
        if name != "gateway":
            assert env[f"QUARRY_{name.upper()}_METRICS_PORT"] == str(named["metrics"])
    dashboards = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "quarry-grafana-dashboard"]
    assert dashboards and json.loads(dashboards[0]["data"]["quarry.json"])["uid"] == "quarry-overview"
