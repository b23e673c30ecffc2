"""Schemathesis against the running stack's ``/openapi.json``: every operation, with auth, with
a fixed seed and a bounded number of cases. Any 5xx, and any response that violates the schema
it declares, fails the test.

The stack holds real data first (an index with files, a pipeline with a document, an uploaded
file), and the generator draws path and body ids from those most of the time, so the cases reach
past the 404 of an unknown id into the operations' logic. The larger run that found the bugs
this guards against (>= 1,000 cases) is the same test with ``QUARRY_SCHEMATHESIS_EXAMPLES=50``
(docs/reliability.md); by default it keeps a few hundred cases in every CI run.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from llama_cloud import LlamaCloud

from services.launcher import Stack
from tests.e2e.corpus import ingest_corpus
from tests.e2e.stack import running_stack

pytestmark = pytest.mark.e2e

API_KEY = "qk-schemathesis"
SEED = 20261203
#: Cases per operation and phase; ``QUARRY_SCHEMATHESIS_EXAMPLES=50`` makes the large run.
MAX_EXAMPLES = int(os.environ.get("QUARRY_SCHEMATHESIS_EXAMPLES", "4"))
#: The ids each parameter name is drawn from (with probability 0.8; otherwise anything).
ID_PARAMETERS = {
    "index_id": "indexes", "pipeline_id": "indexes", "source_directory_id": "directories",
    "directory_id": "directories", "file_id": "files", "parsed_directory_file_id": "files",
    "directory_file_id": "directory_files", "document_id": "documents", "project_id": "projects",
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("quarry-schemathesis"), API_KEY) as s:
        yield s


def _seed(stack: Stack) -> dict[str, list[str]]:
    """Real ids of every kind the operations take."""
    client = LlamaCloud(api_key=API_KEY, base_url=stack.base_url, max_retries=0, timeout=60)
    index = ingest_corpus(client, "fuzzed")
    files = [f.file_id for f in client.retrieval.find(index_id=index.id)]
    directory_files = [f.id for f in client.beta.directories.files.list(index.source_directory_id)]
    http = client._client  # the SDK's httpx client carries the key and the base URL
    headers = {"Authorization": f"Bearer {API_KEY}"}
    pipeline = http.put(f"{stack.base_url}/api/v1/pipelines", json={"name": "fuzzed-pipeline"}, headers=headers)
    pipeline_id = pipeline.json()["id"]
    http.post(f"{stack.base_url}/api/v1/pipelines/{pipeline_id}/documents", headers=headers,
              json=[{"text": "A document about basalt columns.", "metadata": {"kind": "note"}, "id": "doc-1"}])
    uploaded = http.post(f"{stack.base_url}/api/v1/beta/files", headers=headers,
                         files={"file": ("extra.txt", io.BytesIO(b"extra text"))}).json()
    projects = [p.id for p in client.projects.list()]
    return {"indexes": [index.id, pipeline_id], "directories": [index.source_directory_id],
            "files": [*files, uploaded["id"]], "directory_files": directory_files, "documents": ["doc-1"],
            "projects": projects}


def _config(stack: Stack, ids: dict[str, list[str]], path: Path) -> Path:
    lines = [f'headers = {{ Authorization = "Bearer {API_KEY}" }}', ""]
    for name, values in ids.items():
        lines += [f"[dictionaries.{name}]", f"values = {json.dumps(values)}", ""]
    lines.append("[parameters]")
    for parameter, dictionary in ID_PARAMETERS.items():
        for location in ("path", "query", "body"):
            lines.append(f'"{location}.{parameter}" = {{ dictionary = "{dictionary}", probability = 0.8 }}')
    path.write_text("\n".join(lines) + "\n")
    return path


def test_no_server_error_and_no_schema_violation(stack: Stack, tmp_path: Path) -> None:
    config = _config(stack, _seed(stack), tmp_path / "schemathesis.toml")
    junit = tmp_path / "junit.xml"
    command = [
        str(Path(sys.executable).parent / "st"), "--config-file", str(config), "run",
        f"{stack.base_url}/openapi.json",
        "--checks", "not_a_server_error,response_schema_conformance",
        "--max-examples", str(MAX_EXAMPLES), "--seed", str(SEED), "--generation-deterministic",
        "--phases", "examples,coverage,fuzzing", "--workers", "1", "--request-timeout", "30",
        "--report", "junit", "--report-junit-path", str(junit), "--no-color",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False, cwd=tmp_path)
    summary = _summary(done.stdout)
    print(f"\nschemathesis: {summary['line']}")
    assert done.returncode == 0, done.stdout[-8000:] + done.stderr[-2000:]
    assert summary["generated"] >= 200, summary  # a few hundred cases, not a no-op
    tree = ET.parse(junit).getroot()
    assert int(tree.get("failures") or 0) == 0 and int(tree.get("errors") or 0) == 0


def _summary(output: str) -> dict[str, Any]:
    """The "Test cases: N generated, ..." line of the CLI's summary."""
    for line in output.splitlines():
        if "generated" in line and line.strip()[0].isdigit():
            return {"generated": int(line.split()[0]), "line": line.strip()}
    return {"generated": 0, "line": output[-2000:]}
