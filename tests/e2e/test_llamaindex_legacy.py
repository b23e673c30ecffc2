"""The legacy pipelines surface, driven by LlamaIndex's own clients (issue 3).

``llama-index-indices-managed-llama-cloud==0.12.0`` pins ``llama-cloud<2`` and so cannot share
Quarry's virtualenv (which has ``llama-cloud==2.19.0``): it gets its own at ``<repo>/.venv-li-e2e``,
built once and reused while its pins match. ``llamaindex/scenario.py`` runs there as a user's
program would, against the whole stack started as processes. A second test checks that the v2
retrieval API, given the pipeline id as ``index_id``, returns the same chunks as the legacy API.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.launcher import Stack
from tests.e2e.stack import running_stack
from tests.fixtures.ingest.pdf_builder import build_pdf

# Building the venv (pip, ~1 min on a cold cache) happens inside the first test's budget.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1200)]

REPO = Path(__file__).resolve().parents[2]
VENV = REPO / ".venv-li-e2e"
REQUIREMENTS = ("llama-index-indices-managed-llama-cloud==0.12.0", "llama-index-core==0.14.25")
MARKER = VENV / "quarry-requirements.txt"
SCENARIO = Path(__file__).with_name("llamaindex") / "scenario.py"
VENV_TIMEOUT = 900
SCENARIO_TIMEOUT = 600
API_KEY = "qk-llamaindex-e2e"
# Variables of Quarry's environment that must not leak into the other interpreter.
_FOREIGN_ENV = ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "LLAMA_CLOUD_BASE_URL",
                "LLAMA_CLOUD_API_KEY", "LLAMA_PARSE_API_KEY", "LLAMA_CLOUD_CUSTOM_HEADERS")

PDF_NAME = "glacier-report.pdf"
PDF_PAGES = [
    ["Glacier survey report.", "Page one covers the expedition and its route over the pass."],
    ["Page two: the glacier retreated forty metres since the last survey.", "Meltwater lakes doubled in size."],
    ["Page three lists the equipment: ice axes, crampons and a GPS receiver."],
]
TXT_NAME = "harbour-notes.txt"
TXT = ("Harbour master's notes. The breakwater was repaired in spring with granite blocks from the quarry. "
       "Fishing boats now moor along the new pontoon, and the ferry to the island runs twice a day in summer.")


def _venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _FOREIGN_ENV}
    return {**env, "PIP_NO_INPUT": "1", "PYTHONUNBUFFERED": "1", **extra}


def _installed(python: Path) -> dict[str, str] | None:
    """The pinned packages' installed versions, or None when the interpreter cannot say."""
    names = [r.split("==")[0] for r in REQUIREMENTS]
    code = "import importlib.metadata as m, json, sys; print(json.dumps({n: m.version(n) for n in sys.argv[1:]}))"
    try:
        out = subprocess.run([str(python), "-c", code, *names], capture_output=True, text=True, timeout=60,
                             stdin=subprocess.DEVNULL, env=_clean_env(), check=True)
        return json.loads(out.stdout)
    except (OSError, subprocess.SubprocessError, json.JSONDecodeError):
        return None


def _venv_is_current() -> bool:
    pins = dict(r.split("==") for r in REQUIREMENTS)
    return (MARKER.is_file() and MARKER.read_text() == "\n".join(REQUIREMENTS) + "\n"
            and _installed(_venv_python(VENV)) == pins)


def _run_or_fail(cmd: list[str], timeout: float, what: str) -> None:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                              env=_clean_env())
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"{what} did not finish in {timeout:.0f}s:\n{_tail(e.stdout)}\n{_tail(e.stderr)}", pytrace=False)
    if done.returncode != 0:
        pytest.fail(f"{what} failed (exit {done.returncode}):\n{_tail(done.stdout)}\n{_tail(done.stderr)}",
                    pytrace=False)


def _tail(out: str | bytes | None, limit: int = 6000) -> str:
    text = out.decode("utf-8", "replace") if isinstance(out, bytes) else (out or "")
    return text[-limit:]


@pytest.fixture(scope="session")
def li_python() -> Path:
    """The LlamaIndex venv's interpreter: reused when its pins match, else (re)built with pip."""
    # Engineers and CI share the working tree: one builder at a time, the others wait and reuse.
    lock_name = f"quarry-venv-li-e2e-{hashlib.sha256(str(VENV).encode()).hexdigest()[:16]}.lock"
    with open(Path(tempfile.gettempdir()) / lock_name, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _venv_is_current():
            shutil.rmtree(VENV, ignore_errors=True)
            deadline = time.monotonic() + VENV_TIMEOUT
            _run_or_fail([sys.executable, "-m", "venv", str(VENV)], 120, "python -m venv")
            _run_or_fail([str(_venv_python(VENV)), "-m", "pip", "install", "--no-input", "--disable-pip-version-check",
                          "--progress-bar", "off", *REQUIREMENTS], deadline - time.monotonic(), "pip install")
            # Written last: a venv whose install was interrupted is never taken for a good one.
            MARKER.write_text("\n".join(REQUIREMENTS) + "\n")
            assert _venv_is_current(), f"{VENV} does not report the pinned versions after pip install"
    return _venv_python(VENV)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("quarry-li-e2e"), API_KEY) as s:
        yield s


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The files the scenario uploads, and a manifest of what each one must come back as."""
    folder = tmp_path_factory.mktemp("li-fixtures")
    (folder / PDF_NAME).write_bytes(build_pdf(PDF_PAGES))
    (folder / TXT_NAME).write_text(TXT)
    manifest = {"files": {
        PDF_NAME: {"custom_metadata": {"department": "geology", "year": 2019, "tags": ["survey", "ice"]},
                   "text": None, "lines": [line for page in PDF_PAGES for line in page], "pages": len(PDF_PAGES)},
        TXT_NAME: {"custom_metadata": {"department": "ports", "year": 2021},
                   "text": TXT, "lines": [TXT], "pages": 0},
    }}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


@dataclass(frozen=True)
class ScenarioRun:
    returncode: int
    output: str
    state: dict[str, Any]
    summary: dict[str, Any] | None

    def explain(self) -> str:
        return f"scenario exit {self.returncode}; its output:\n{self.output}"


def _last_json(output: str, prefix: str) -> dict[str, Any] | None:
    lines = [line[len(prefix):] for line in output.splitlines() if line.startswith(prefix)]
    return json.loads(lines[-1]) if lines else None


@pytest.fixture(scope="module")
def scenario(li_python: Path, stack: Stack, fixtures: Path) -> ScenarioRun:
    cmd = [str(li_python), str(SCENARIO), "--base-url", stack.base_url, "--api-key", API_KEY,
           "--fixtures", str(fixtures)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=SCENARIO_TIMEOUT,
                              stdin=subprocess.DEVNULL, env=_clean_env(), cwd=fixtures)
        returncode, output = done.returncode, done.stdout + "\n--- stderr ---\n" + _tail(done.stderr)
    except subprocess.TimeoutExpired as e:
        returncode, output = -1, f"timed out after {SCENARIO_TIMEOUT}s\n{_tail(e.stdout)}\n{_tail(e.stderr)}"
    return ScenarioRun(returncode, output, _last_json(output, "SCENARIO_STATE ") or {},
                       _last_json(output, "SCENARIO_SUMMARY "))


def test_llamaindex_user_changes_nothing_but_base_url(scenario: ScenarioRun) -> None:
    if scenario.returncode != 0:
        pytest.fail(scenario.explain(), pytrace=False)
    assert scenario.summary is not None and scenario.summary["checks"] > 0, scenario.explain()


# (query, legacy body fields, the equivalent v2 body fields)
EQUIVALENT = [
    ("how do solar panels make electricity", {"dense_similarity_top_k": 7}, {"top_k": 7}),
    ("storms at the lighthouse", {}, {}),
    ("storms at the lighthouse", {"dense_similarity_top_k": 6, "enable_reranking": False, "alpha": 0.3},
     {"top_k": 6, "rerank": {"enabled": False}, "vector_pipeline_weight": 0.3, "full_text_pipeline_weight": 0.7}),
    ("geology notes", {"dense_similarity_top_k": 20, "rerank_top_n": 3}, {"top_k": 20, "rerank": {"top_n": 3}}),
    ("notes", {"dense_similarity_top_k": 20, "search_filters": {
        "filters": [{"key": "year", "value": 2021, "operator": ">="}]}},
     {"top_k": 20, "custom_filters": {"year": {"operator": "gte", "value": 2021}}}),
]


def test_v2_retrieve_returns_the_legacy_chunks(scenario: ScenarioRun, stack: Stack) -> None:
    pipeline_id = scenario.state.get("docs_pipeline_id")
    if not pipeline_id:
        pytest.fail("the scenario did not build its pipeline\n" + scenario.explain(), pytrace=False)
    headers = {"Authorization": f"Bearer {API_KEY}"}
    with httpx.Client(base_url=stack.base_url, headers=headers, timeout=30) as http:
        for query, legacy_params, v2_params in EQUIVALENT:
            legacy = http.post(f"/api/v1/pipelines/{pipeline_id}/retrieve", json={"query": query, **legacy_params})
            v2 = http.post("/api/v1/retrieval/retrieve", json={"index_id": pipeline_id, "query": query, **v2_params})
            assert legacy.status_code == 200, (legacy_params, legacy.text)
            assert v2.status_code == 200, (v2_params, v2.text)
            nodes = legacy.json()["retrieval_nodes"]
            results = v2.json()["results"]
            what = f"{query!r} {legacy_params}"
            assert nodes, what
            assert [n["node"]["text"] for n in nodes] == [r["content"] for r in results], what
            assert [(n["node"]["start_char_idx"], n["node"]["end_char_idx"]) for n in nodes] == [
                (r["static_fields"]["chunk_start_char"], r["static_fields"]["chunk_end_char"]) for r in results
            ], what
            ids = [n["node"]["id_"] for n in nodes]
            assert all(ids) and len(set(ids)) == len(ids), what
            for node, result in zip(nodes, results, strict=True):
                extra = node["node"]["extra_info"]
                assert {k: extra.get(k) for k in result["metadata"]} == result["metadata"], what
                reranked = legacy_params.get("enable_reranking", True)
                expected_score = result["rerank_score"] if reranked else result["score"]
                assert node["score"] == pytest.approx(expected_score, abs=1e-6), what
