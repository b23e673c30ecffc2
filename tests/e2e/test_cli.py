"""The ``quarry`` command's conventions against a running stack: ``--version``, ``--json`` on
stdout, one-line errors, exit codes that tell bad input, an API error and an unreachable gateway
apart, the official clients' LLAMA_CLOUD_* variables, and the index and admin commands."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from services.cli import EXIT_API_ERROR, EXIT_BAD_INPUT, EXIT_UNREACHABLE
from services.launcher import Stack
from tests.e2e.stack import running_stack

pytestmark = pytest.mark.e2e

ADMIN_KEY = "qk-cli-e2e"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("cli"), ADMIN_KEY) as s:
        yield s


def quarry(*args: str, env: dict[str, str] | None = None, stdin: str = "") -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items()
             if k not in ("QUARRY_URL", "QUARRY_API_KEY", "LLAMA_CLOUD_API_KEY", "LLAMA_CLOUD_BASE_URL")}
    return subprocess.run([sys.executable, "-m", "services.cli", *args], capture_output=True, text=True,
                          timeout=120, env={**clean, **(env or {})}, input=stdin, check=False)


def ok_json(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stdout == ""
    return lines[0]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_version() -> None:
    result = quarry("--version")
    assert result.returncode == 0 and result.stdout.startswith("quarry 0.")


def test_ingest_ls_query_and_rm_with_json_and_the_official_variables(stack: Stack, tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "tides.txt").write_text("Tides rise and fall twice a day because of the moon's gravity.")
    (folder / "bees.md").write_text("# Bees\n\nHoney bees dance to tell the hive where flowers are.")
    env = {"LLAMA_CLOUD_BASE_URL": stack.base_url, "LLAMA_CLOUD_API_KEY": ADMIN_KEY}
    ingested = ok_json(quarry("ingest", str(folder), "--index", "cli-docs", "--json", env=env))
    assert ingested["name"] == "cli-docs" and ingested["sync_status"] == "succeeded"
    listed = ok_json(quarry("index", "ls", "--json", env=env))
    assert [i["name"] for i in listed] == ["cli-docs"]
    answer = ok_json(quarry("query", "why do tides happen", "--index", "cli-docs", "--json", env=env))
    assert answer["results"] and "moon" in answer["results"][0]["content"]
    # QUARRY_* wins over LLAMA_CLOUD_*.
    wrong = quarry("index", "ls", "--json", env={**env, "QUARRY_API_KEY": "qk-wrong"})
    assert wrong.returncode == EXIT_API_ERROR and "401" in one_line_error(wrong)
    assert ok_json(quarry("index", "rm", "cli-docs", "--json", env=env)) == {"deleted": ingested["id"]}
    assert ok_json(quarry("index", "ls", "--json", env=env)) == []


def test_exit_codes_tell_what_went_wrong(stack: Stack) -> None:
    env = {"QUARRY_URL": stack.base_url, "QUARRY_API_KEY": ADMIN_KEY}
    missing = quarry("query", "anything", "--index", "no-such-index", env=env)
    assert missing.returncode == EXIT_BAD_INPUT and "no index named 'no-such-index'" in one_line_error(missing)
    refused = quarry("admin", "keys", "revoke", "no-such-key", env=env)
    assert refused.returncode == EXIT_API_ERROR and "404" in one_line_error(refused)
    down = quarry("index", "ls", "--url", f"http://127.0.0.1:{_closed_port()}", "--api-key", ADMIN_KEY)
    assert down.returncode == EXIT_UNREACHABLE and "cannot reach the gateway" in one_line_error(down)
    usage = quarry("query", env=env)
    assert usage.returncode == 2 and "Traceback" not in usage.stderr


def test_admin_commands(stack: Stack) -> None:
    env = {"QUARRY_URL": stack.base_url, "QUARRY_API_KEY": ADMIN_KEY}
    project = ok_json(quarry("admin", "projects", "create", "cli-team", "--json", env=env))
    assert project["name"] == "cli-team"
    assert "cli-team" in [p["name"] for p in ok_json(quarry("admin", "projects", "list", "--json", env=env))]
    key = ok_json(quarry("admin", "keys", "create", "--project", "cli-team", "--name", "bot", "--json", env=env))
    assert key["project_id"] == project["id"] and key["api_key"]
    keys = ok_json(quarry("admin", "keys", "list", "--project", "cli-team", "--json", env=env))
    assert [k["id"] for k in keys] == [key["id"]] and "api_key" not in keys[0]
    as_team = {"QUARRY_URL": stack.base_url, "QUARRY_API_KEY": key["api_key"]}
    assert ok_json(quarry("index", "ls", "--json", env=as_team)) == []
    forbidden = quarry("admin", "projects", "list", env=as_team)
    assert forbidden.returncode == EXIT_API_ERROR and "403" in one_line_error(forbidden)
    revoked = ok_json(quarry("admin", "keys", "revoke", key["id"], "--json", env=env))
    assert revoked["revoked_at"]
    assert quarry("index", "ls", env=as_team).returncode == EXIT_API_ERROR
    declined = quarry("admin", "projects", "delete", "cli-team", env=env, stdin="n\n")
    assert declined.returncode == EXIT_BAD_INPUT
    deleted = ok_json(quarry("admin", "projects", "delete", "cli-team", "--yes", "--json", env=env))
    assert deleted == {"id": project["id"], "deleted_index_ids": []}
