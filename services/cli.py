"""The ``quarry`` command: ``up`` (run the stack), ``ingest`` (upload + sync), ``query``,
``index ls|rm|rebuild``, ``admin keys|projects``, and ``bench ...`` (the harness in ``bench/``).

Conventions: ``--json`` prints the data as JSON on stdout (tables and progress go to stderr or
are left out); an error is one line on stderr; the exit code tells what happened (``EXIT_*``).
The gateway and key come from ``--url`` / ``--api-key``, else ``QUARRY_URL`` / ``QUARRY_API_KEY``,
else the official clients' ``LLAMA_CLOUD_BASE_URL`` / ``LLAMA_CLOUD_API_KEY``, else the local
stack's defaults.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from services.launcher import Stack, StackError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Quarry: self-hosted LlamaCloud-style retrieval")
console = Console(stderr=True)

SAMPLE_DIR = Path(__file__).parent / "sample"
SAMPLE_INDEX = "sample"
DataDir = Annotated[Path, typer.Option("--data-dir", envvar="QUARRY_DATA_DIR", help="Where every index lives")]
Url = Annotated[str, typer.Option("--url", envvar=["QUARRY_URL", "LLAMA_CLOUD_BASE_URL"], help="Gateway base URL")]
ApiKey = Annotated[str | None, typer.Option("--api-key", envvar=["QUARRY_API_KEY", "LLAMA_CLOUD_API_KEY"],
                                            show_default=False)]
Json = Annotated[bool, typer.Option("--json", help="Print the data as JSON on stdout")]

#: Exit codes: bad input on the command line (Click's own), the gateway refused the request (a
#: 4xx/5xx answer), some files could not be indexed, the gateway could not be reached.
EXIT_BAD_INPUT = 2
EXIT_API_ERROR = 3
EXIT_FILES_FAILED = 4
EXIT_UNREACHABLE = 5


class CliError(Exception):
    """An error the CLI reports in one line and an exit code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def _detail(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        return response.text[:300]
    if isinstance(detail, list):  # FastAPI's validation errors: name the fields
        return "; ".join(f"{'.'.join(str(p) for p in e.get('loc', []))}: {e.get('msg')}" for e in detail)
    return str(detail)


class Client:
    """A small HTTP client of the gateway for the CLI (the official SDKs work the same way)."""

    def __init__(self, url: str, api_key: str, timeout: float = 60.0) -> None:
        self.url = url
        self.http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {api_key}"}, timeout=timeout)

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self.http.request(method, path, **kwargs)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise CliError(f"cannot reach the gateway at {self.url} ({type(exc).__name__}); is `quarry up` running?",
                           EXIT_UNREACHABLE) from None
        except httpx.TimeoutException:
            raise CliError(f"{method} {path}: the gateway did not answer in time", EXIT_UNREACHABLE) from None
        if response.status_code >= 400:
            raise CliError(f"{method} {path} -> {response.status_code}: {_detail(response)}", EXIT_API_ERROR)
        return response.json() if response.content else None

    def index_by_name(self, name: str) -> dict[str, Any] | None:
        params: dict[str, Any] = {"page_size": 100}
        while True:
            page = self.call("GET", "/api/v1/indexes", params=params)
            for item in page["items"]:
                if item["name"] == name:
                    return item  # type: ignore[no-any-return]
            params["page_token"] = page.get("next_page_token")
            if not params["page_token"]:
                return None

    def ingest(self, paths: list[Path], index_name: str, *, show: bool = True) -> dict[str, Any]:
        """Upload files into a directory named after the index, create the index, sync, wait."""
        index = self.index_by_name(index_name)
        if index is None:
            directory = self.call("POST", "/api/v1/beta/directories", json={"name": index_name})
            directory_id = directory["id"]
        else:
            directory_id = index["source_directory_id"]
        for path in paths:
            with path.open("rb") as fh:
                self.call("POST", f"/api/v1/beta/directories/{directory_id}/files/upload",
                          files={"upload_file": (path.name, fh)}, data={"display_name": path.name})
        if index is None:
            index = self.call("POST", "/api/v1/indexes", json={"source_directory_id": directory_id, "name": index_name})
        job = self.call("POST", f"/api/v1/indexes/{index['id']}/sync")
        return self.wait(index["id"], job, show=show)

    def wait(self, index_id: str, job: dict[str, Any], *, show: bool, timeout: float = 3600) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with Progress(TextColumn("[bold]syncing"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console, disable=not show) as progress:
            task = progress.add_task("sync", total=max(job["total_items"], 1))
            while time.monotonic() < deadline:
                index = self.call("GET", f"/api/v1/indexes/{index_id}", params={"expand": "sync_in_progress"})
                status = index.get("sync_status")
                done = (index.get("sync_progress") or {}).get("done_items", 0)
                total = (index.get("sync_progress") or {}).get("total_items", 0)
                progress.update(task, completed=done, total=max(total, 1))
                if status in ("succeeded", "partially_succeeded", "failed", "cancelled"):
                    if status not in ("succeeded", "partially_succeeded"):
                        error = (index.get("sync_progress") or {}).get("error")
                        raise CliError(f"sync {status}: {error}", EXIT_API_ERROR)
                    return index  # type: ignore[no-any-return]
                time.sleep(0.3)
        raise CliError("the sync did not finish in time", EXIT_UNREACHABLE)

    def query(self, index_id: str, text: str, top_k: int, rerank: bool) -> dict[str, Any]:
        return self.call("POST", "/api/v1/retrieval/retrieve", json={  # type: ignore[no-any-return]
            "index_id": index_id, "query": text, "top_k": top_k, "rerank": {"enabled": rerank}})


def _files(path: Path) -> list[Path]:
    """Every file under ``path`` (hidden ones excepted): the server decides what it can parse and
    reports the rest as failed, so nothing is skipped silently."""
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))


def print_failures(index: dict[str, Any]) -> int:
    """The table of files the last sync could not index; returns how many failed."""
    progress = index.get("sync_progress") or {}
    failures = progress.get("failures") or []
    failed = int(progress.get("failed_items") or 0)
    if not failed:
        return 0
    table = Table(title=f"{failed} file(s) could not be indexed", title_justify="left")
    table.add_column("file", overflow="fold")
    table.add_column("reason", overflow="fold")
    for f in failures:
        table.add_row(f.get("file_name") or f.get("directory_file_id", ""), f.get("error", ""))
    if failed > len(failures):
        table.add_row(f"… and {failed - len(failures)} more", "")
    console.print(table)
    return failed


def _key(api_key: str | None, data_dir: Path) -> str:
    if api_key:
        return api_key
    stored = data_dir / "api_key"
    if stored.exists():
        return stored.read_text().strip()
    raise CliError("no API key: pass --api-key, set QUARRY_API_KEY (or LLAMA_CLOUD_API_KEY), or run `quarry up` "
                   "first", EXIT_BAD_INPUT)


def print_json(data: Any) -> None:
    """Data for scripts: JSON on stdout, nothing else there."""
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def _version(value: bool) -> None:
    if value:
        try:
            print(f"quarry {package_version('quarry')}")
        except PackageNotFoundError:  # run from a tree that is not installed
            print("quarry (not installed)")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                help="Print the version and exit")] = False) -> None:
    """Quarry: self-hosted LlamaCloud-style retrieval."""


def print_results(result: dict[str, Any]) -> None:
    table = Table(show_lines=False)
    for col in ("#", "score", "rerank", "file", "pages", "content"):
        table.add_column(col, overflow="fold")
    for i, r in enumerate(result["results"], 1):
        sf = r.get("static_fields") or {}
        pages = f"{sf.get('page_range_start')}-{sf.get('page_range_end')}" if sf.get("page_range_start") else ""
        rerank = "" if r.get("rerank_score") is None else f"{r['rerank_score']:.3f}"
        content = " ".join(r["content"].split())
        table.add_row(str(i), f"{r['score']:.3f}", rerank, r.get("file_name") or sf.get("parsed_directory_file_id", ""),
                      pages, content[:160] + ("…" if len(content) > 160 else ""))
    Console().print(table)


@app.command()
def up(
    data_dir: DataDir = Path(".quarry"),
    host: Annotated[str, typer.Option(help="Gateway host")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Gateway port")] = 8000,
    grpc_port: Annotated[int, typer.Option(help="The gateway's gRPC API port (quarry.retrieval.v1)")] = 8001,
    api_key: ApiKey = None,
    sample: Annotated[bool, typer.Option(help="Ingest the bundled sample corpus on first start")] = True,
) -> None:
    """Start every Quarry process on embedded backends and keep them running (Ctrl-C stops)."""
    data_dir = data_dir.resolve()
    stack = Stack(data_dir=data_dir, host=host, port=port, grpc_port=grpc_port, api_key=api_key,
                  notify=lambda message: console.print(f"[yellow]supervisor:[/] {message}"))
    console.print(f"[bold]quarry[/] starting on embedded backends, data in {data_dir}")
    stop = {"now": False}

    def _stop(signum: int, frame: object) -> None:
        stop["now"] = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        stack.start()
    except StackError as exc:
        console.print(f"[red]start-up failed:[/] {exc}")
        raise typer.Exit(1) from None
    key = stack.api_key or ""
    console.print(f"[green]ready[/] gateway {stack.base_url}  console {stack.base_url}/console  "
                  f"gRPC {stack.grpc_address}  project 'Default'")
    if not api_key:
        console.print(f"API key: [bold]{key}[/]  (stored in {data_dir / 'api_key'})")
    try:
        client = Client(stack.base_url, key)
        index = client.index_by_name(SAMPLE_INDEX)
        if sample and index is None:
            console.print(f"ingesting the sample corpus into index '{SAMPLE_INDEX}'")
            index = client.ingest(_files(SAMPLE_DIR), SAMPLE_INDEX)
        if index is not None:
            question = "how does hybrid search combine dense and sparse results?"
            console.print(f"sample query: [italic]{question}[/]")
            print_results(client.query(index["id"], question, 3, True))
        console.print(f"try: quarry query \"what does error QRY-503 mean?\" --index {SAMPLE_INDEX}")
        console.print("Ctrl-C stops every process; a process that dies is restarted")
        while not stop["now"]:
            time.sleep(0.5)
    finally:
        console.print("stopping…")
        stack.stop()
        console.print("stopped")


@app.command()
def ingest(
    path: Annotated[Path, typer.Argument(exists=True, help="A file or a folder of files")],
    index: Annotated[str, typer.Option("--index", help="Index name (created if missing)")],
    url: Url = "http://127.0.0.1:8000",
    api_key: ApiKey = None,
    data_dir: DataDir = Path(".quarry"),
    as_json: Json = False,
) -> None:
    """Upload files through the HTTP API, sync the index and wait until it is ready.

    Exits with 4 when the sync finished but some files could not be indexed (they are listed).
    """
    files = _files(path)
    if not files:
        raise CliError(f"no files under {path}", EXIT_BAD_INPUT)
    client = Client(url, _key(api_key, data_dir))
    console.print(f"uploading {len(files)} file(s) to index '{index}'")
    result = client.ingest(files, index, show=not as_json)
    if as_json:
        print_json(result)
    if print_failures(result):
        console.print(f"[yellow]index '{index}' ready without the files above[/] ({result['id']})")
        raise typer.Exit(EXIT_FILES_FAILED)
    console.print(f"[green]index '{index}' ready[/] ({result['id']})")


@app.command()
def query(
    text: Annotated[str, typer.Argument(help="The query")],
    index: Annotated[str, typer.Option("--index", help="Index name")],
    top_k: Annotated[int, typer.Option("--top-k", min=1)] = 5,
    rerank: Annotated[bool, typer.Option(help="Rerank the fused candidates")] = True,
    url: Url = "http://127.0.0.1:8000",
    api_key: ApiKey = None,
    data_dir: DataDir = Path(".quarry"),
    as_json: Json = False,
) -> None:
    """Print ranked results with scores and file/page."""
    client = Client(url, _key(api_key, data_dir))
    result = client.query(_index(client, index)["id"], text, top_k, rerank)
    if as_json:
        print_json(result)
    else:
        print_results(result)


def _index(client: Client, name: str) -> dict[str, Any]:
    found = client.index_by_name(name)
    if found is None:
        raise CliError(f"no index named {name!r} (quarry index ls lists them)", EXIT_BAD_INPUT)
    return found


@app.command()
def backup(
    destination: Annotated[Path, typer.Argument(help="The backup file to write (.tar.gz)")],
    data_dir: DataDir = Path(".quarry"),
    as_json: Json = False,
) -> None:
    """Back up a stopped embedded stack's data dir (catalog, engines, API key) into one file."""
    from services.backup import BackupError
    from services.backup import backup as take

    try:
        summary = take(data_dir.resolve(), destination)
    except BackupError as exc:
        raise CliError(str(exc), EXIT_BAD_INPUT) from None
    if as_json:
        print_json({"path": str(summary.path), "files": summary.files, "bytes": summary.bytes})
    else:
        console.print(f"[green]backed up[/] {summary.files} file(s), {summary.bytes / 1e6:.1f} MB to {summary.path}")


@app.command()
def restore(
    source: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="A file written by quarry backup")],
    data_dir: DataDir = Path(".quarry"),
    as_json: Json = False,
) -> None:
    """Restore a backup into an empty data dir, after checking every file against its manifest."""
    from services.backup import BackupError
    from services.backup import restore as unpack

    try:
        summary = unpack(source, data_dir.resolve())
    except BackupError as exc:
        raise CliError(str(exc), EXIT_BAD_INPUT) from None
    if as_json:
        print_json({"path": str(summary.path), "files": summary.files, "bytes": summary.bytes})
    else:
        console.print(f"[green]restored[/] {summary.files} file(s) into {summary.path}; start it with "
                      f"`quarry up --data-dir {summary.path}`")


index_app = typer.Typer(no_args_is_help=True, help="Indexes of the project")
app.add_typer(index_app, name="index")


@index_app.command("ls")
def index_ls(
    url: Url = "http://127.0.0.1:8000",
    api_key: ApiKey = None,
    data_dir: DataDir = Path(".quarry"),
    as_json: Json = False,
) -> None:
    """The project's indexes: name, id, sync status, files, last sync."""
    client = Client(url, _key(api_key, data_dir))
    items: list[dict[str, Any]] = []
    params: dict[str, Any] = {"page_size": 100}
    while True:
        page = client.call("GET", "/api/v1/indexes", params=params)
        items += page["items"]
        params["page_token"] = page.get("next_page_token")
        if not params["page_token"]:
            break
    if as_json:
        print_json(items)
        return
    table = Table()
    for col in ("name", "id", "status", "files", "last synced"):
        table.add_column(col, overflow="fold")
    for i in items:
        progress = i.get("sync_progress") or {}
        table.add_row(i["name"], i["id"], i.get("sync_status") or "", str(progress.get("total_items", "")),
                      i.get("last_synced_at") or "")
    Console().print(table)


@index_app.command("rm")
def index_rm(
    name: Annotated[str, typer.Argument(help="Index name")],
    url: Url = "http://127.0.0.1:8000",
    api_key: ApiKey = None,
    data_dir: DataDir = Path(".quarry"),
    as_json: Json = False,
) -> None:
    """Delete an index and its chunks (its source directory and files stay)."""
    client = Client(url, _key(api_key, data_dir))
    index = _index(client, name)
    client.call("DELETE", f"/api/v1/indexes/{index['id']}")
    if as_json:
        print_json({"deleted": index["id"]})
    else:
        console.print(f"[green]index '{name}' deleted[/] ({index['id']})")


@index_app.command("rebuild")
def index_rebuild(
    name: Annotated[str, typer.Argument(help="Index name")],
    engines: Annotated[list[str] | None, typer.Option("--engine", help="dense or sparse; repeatable")] = None,
    url: Url = "http://127.0.0.1:8000",
    api_key: ApiKey = None,
    data_dir: DataDir = Path(".quarry"),
) -> None:
    """Re-index an index's stored parsed texts into its engines (a damaged keyword index), and wait."""
    client = Client(url, _key(api_key, data_dir))
    index = _index(client, name)
    job = client.call("POST", f"/api/v1/indexes/{index['id']}/rebuild", json={"engines": engines or None})
    console.print(f"rebuilding {', '.join(engines or ['dense', 'sparse'])} of index '{name}' "
                  f"from {job['total_items']} parsed file(s)")
    result = client.wait(index["id"], job, show=True)
    print_failures(result)
    console.print(f"[green]index '{name}' rebuilt[/]")


admin_app = typer.Typer(no_args_is_help=True, help="Administration (needs an admin API key)")
keys_app = typer.Typer(no_args_is_help=True, help="API keys")
projects_app = typer.Typer(no_args_is_help=True, help="Projects")
admin_app.add_typer(keys_app, name="keys")
admin_app.add_typer(projects_app, name="projects")
app.add_typer(admin_app, name="admin")


def _table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    table = Table()
    for col in columns:
        table.add_column(col, overflow="fold")
    for row in rows:
        table.add_row(*["" if row.get(c) is None else str(row.get(c)) for c in columns])
    Console().print(table)


def _project_id(client: Client, name_or_id: str) -> str:
    for project in client.call("GET", "/api/v1/admin/projects"):
        if name_or_id in (project["id"], project["name"]):
            return str(project["id"])
    raise CliError(f"no project named {name_or_id!r} (quarry admin projects list)", EXIT_BAD_INPUT)


KEY_COLUMNS = ["id", "project_id", "name", "is_admin", "created_at", "expires_at", "revoked_at", "last_used_at"]
PROJECT_COLUMNS = ["id", "name", "is_default", "created_at"]


@keys_app.command("create")
def keys_create(
    project: Annotated[str | None, typer.Option(help="Project name or id (default: the caller's)")] = None,
    name: Annotated[str, typer.Option(help="What the key is for")] = "",
    admin: Annotated[bool, typer.Option("--admin", help="The key may call the admin API")] = False,
    expires_in_days: Annotated[float | None, typer.Option(min=0.001, help="Days until it expires")] = None,
    url: Url = "http://127.0.0.1:8000",
    api_key: ApiKey = None,
    data_dir: DataDir = Path(".quarry"),
    as_json: Json = False,
) -> None:
    """Create a key; its secret is printed once."""
    client = Client(url, _key(api_key, data_dir))
    body: dict[str, Any] = {"name": name, "is_admin": admin, "expires_in_days": expires_in_days}
    if project:
        body["project_id"] = _project_id(client, project)
    created = client.call("POST", "/api/v1/admin/keys", json=body)
    if as_json:
        print_json(created)
        return
    console.print(f"key {created['id']} for project {created['project_id']}; the secret (shown only now):")
    print(created["api_key"])


@keys_app.command("list")
def keys_list(
    project: Annotated[str | None, typer.Option(help="Project name or id (default: every project)")] = None,
    url: Url = "http://127.0.0.1:8000",
    api_key: ApiKey = None,
    data_dir: DataDir = Path(".quarry"),
    as_json: Json = False,
) -> None:
    """Keys (never their secrets)."""
    client = Client(url, _key(api_key, data_dir))
    params = {"project_id": _project_id(client, project)} if project else {}
    keys = client.call("GET", "/api/v1/admin/keys", params=params)
    if as_json:
        print_json(keys)
    else:
        _table(keys, KEY_COLUMNS)


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id (quarry admin keys list)")],
    url: Url = "http://127.0.0.1:8000",
    api_key: ApiKey = None,
    data_dir: DataDir = Path(".quarry"),
    as_json: Json = False,
) -> None:
    """Revoke a key: refused at once by this gateway, within 10 s by every other replica."""
    key = Client(url, _key(api_key, data_dir)).call("DELETE", f"/api/v1/admin/keys/{key_id}")
    if as_json:
        print_json(key)
    else:
        console.print(f"[green]key {key_id} revoked[/] at {key['revoked_at']}")


@projects_app.command("create")
def projects_create(
    name: Annotated[str, typer.Argument(help="Project name")],
    url: Url = "http://127.0.0.1:8000",
    api_key: ApiKey = None,
    data_dir: DataDir = Path(".quarry"),
    as_json: Json = False,
) -> None:
    """Create an empty project (then `quarry admin keys create --project NAME`)."""
    project = Client(url, _key(api_key, data_dir)).call("POST", "/api/v1/admin/projects", json={"name": name})
    if as_json:
        print_json(project)
    else:
        console.print(f"[green]project '{name}' created[/] ({project['id']})")


@projects_app.command("list")
def projects_list(
    url: Url = "http://127.0.0.1:8000",
    api_key: ApiKey = None,
    data_dir: DataDir = Path(".quarry"),
    as_json: Json = False,
) -> None:
    """Every project."""
    projects = Client(url, _key(api_key, data_dir)).call("GET", "/api/v1/admin/projects")
    if as_json:
        print_json(projects)
    else:
        _table(projects, PROJECT_COLUMNS)


@projects_app.command("delete")
def projects_delete(
    project: Annotated[str, typer.Argument(help="Project name or id")],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation")] = False,
    url: Url = "http://127.0.0.1:8000",
    api_key: ApiKey = None,
    data_dir: DataDir = Path(".quarry"),
    as_json: Json = False,
) -> None:
    """Delete a project with its indexes, files, keys and chunks in every engine."""
    client = Client(url, _key(api_key, data_dir))
    project_id = _project_id(client, project)
    if not yes and not typer.confirm(f"delete project {project!r} and everything in it?", err=True):
        raise CliError("not deleted", EXIT_BAD_INPUT)
    deleted = client.call("DELETE", f"/api/v1/admin/projects/{project_id}")
    if as_json:
        print_json(deleted)
    else:
        console.print(f"[green]project {project!r} deleted[/] with {len(deleted['deleted_index_ids'])} index(es)")


bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks through the public API (needs the `bench` extra)")
app.add_typer(bench_app, name="bench")
WorkDir = Annotated[Path | None, typer.Option(
    "--work-dir", help="Stack data for the run (kept, and reused by `quality`); default: a temporary folder")]
Results = Annotated[Path | None, typer.Option("--results", help="Folder of the JSON results (default bench/results)")]


def _ints(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise typer.BadParameter(f"expected positive integers, got {text!r}")
    return values


#: What the LlamaIndex peer imports (the `bench` extra).
PEER_MODULES = ("llama_index.core", "llama_index.retrievers.bm25", "llama_index.vector_stores.qdrant")


def _needs_extra(*modules: str, hint: str = "") -> None:
    """Fail before any work when the `bench` extra is missing (the peer and the plots need it)."""
    import importlib.util

    for module in modules:
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            raise typer.BadParameter(f"{module} is not installed: pip install -e '.[bench]'{hint}")


def _bench(name: str, work_dir: Path | None, results: Path | None, fn: Any) -> None:
    """Run ``fn(work_dir)`` in a temporary or given work dir, write ``<results>/<name>.json`` and the report."""
    import shutil
    import tempfile

    if results is None:
        _needs_extra("matplotlib")
    from bench import meta, report

    # SIGTERM unwinds like Ctrl-C, so the stack's processes are stopped on the way out.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    meta_start = meta.machine()
    started = time.monotonic()
    tmp = work_dir is None
    folder = Path(tempfile.mkdtemp(prefix=f"quarry-bench-{name}-")) if work_dir is None else work_dir.resolve()
    try:
        result = fn(folder)
    finally:
        if tmp:
            shutil.rmtree(folder, ignore_errors=True)
    result["meta"] = meta.finish(meta_start, time.monotonic() - started)
    out = results or meta.RESULTS
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(result, indent=1, sort_keys=False) + "\n")
    console.print(f"[green]wrote[/] {out / f'{name}.json'}")
    if results is None:
        report.render()
        console.print(f"[green]wrote[/] {report.DOCS}")


@bench_app.command("quality")
def bench_quality(
    datasets: Annotated[list[str] | None, typer.Option("--dataset", help="Under --datasets-root, or a path")] = None,
    root: Annotated[Path | None, typer.Option("--datasets-root", help="Folder of BEIR datasets")] = None,
    max_queries: Annotated[int | None, typer.Option("--max-queries", min=1)] = None,
    study: Annotated[bool, typer.Option(help="Rerank study (token caps x depths) in process")] = True,
    peer: Annotated[bool, typer.Option(help="LlamaIndex peer on the same chunks")] = True,
    smoke: Annotated[bool, typer.Option(help="Only the headline configurations")] = False,
    configs: Annotated[list[str] | None, typer.Option("--config", help="Only these configurations (repeat)")] = None,
    work_dir: WorkDir = None,
    results: Results = None,
) -> None:
    """nDCG@10 and recall@100 per dataset and configuration (BEIR folders), through the HTTP API."""
    from bench import corpus, quality

    unknown = sorted(set(configs or ()) - set(quality.CONFIGS))
    if unknown:
        raise typer.BadParameter(f"unknown configuration(s) {unknown}; known: {sorted(quality.CONFIGS)}",
                                 param_hint="--config")

    if peer:
        _needs_extra(*PEER_MODULES, hint=" (or pass --no-peer)")
    found = corpus.find_datasets(root or corpus.DEFAULT_DATASETS, datasets or [])
    if not found:
        raise typer.BadParameter("no BEIR datasets found (corpus.jsonl, queries.jsonl, qrels/test.tsv)")
    _bench("quality", work_dir, results, lambda folder: quality.run(
        found, folder, smoke=smoke, max_queries=max_queries, study=study, peer=peer, configs=configs))


def _speed(name: str, sizes: list[int], concurrency: str, duration: float, scale_duration: float | None,
           matrix: bool, peer: bool, work_dir: Path | None, results: Path | None, reuse: bool = False) -> None:
    from bench import corpus, load

    if peer and matrix:
        _needs_extra(*PEER_MODULES, hint=" (or pass --no-peer)")
    vocab = corpus.Vocabulary.from_datasets(corpus.find_datasets(corpus.DEFAULT_DATASETS))
    _bench(name, work_dir, results, lambda folder: load.run_speed(
        vocab, folder, sizes=sizes, concurrencies=_ints(concurrency), duration=duration,
        scale_duration=scale_duration, matrix=matrix, peer=peer, reuse=reuse))


Duration = Annotated[float, typer.Option("--duration", min=1, max=600, help="Seconds per measurement")]


@bench_app.command("load")
def bench_load(
    sizes: Annotated[str, typer.Option("--sizes", help="Chunk counts the index grows through")] = "10000,100000",
    concurrency: Annotated[str, typer.Option("--concurrency")] = "1,8,32,64",
    duration: Duration = 30,
    scale_duration: Annotated[float | None, typer.Option("--scale-duration", min=1, max=600)] = None,
    peer: Annotated[bool, typer.Option(help="LlamaIndex peer on the same chunks")] = True,
    reuse: Annotated[bool, typer.Option(help="Start from the index an earlier run grew in --work-dir")] = False,
    work_dir: WorkDir = None,
    results: Results = None,
) -> None:
    """Synthetic corpus grown through --sizes; load matrix at the largest, floor and peer (bench/results/speed.json)."""
    if reuse and work_dir is None:
        raise typer.BadParameter("--reuse needs the --work-dir of an earlier run")
    _speed("speed", _ints(sizes), concurrency, duration, scale_duration, True, peer, work_dir, results, reuse)


@bench_app.command("scale")
def bench_scale(
    sizes: Annotated[str, typer.Option("--sizes")] = "10000,100000,300000",
    duration: Duration = 30,
    work_dir: WorkDir = None,
    results: Results = None,
) -> None:
    """p50/p99 at concurrency 1 and RSS per process as one index grows (bench/results/scale.json)."""
    _speed("scale", _ints(sizes), "1", duration, None, False, False, work_dir, results)


@bench_app.command("ingest")
def bench_ingest(
    chunks: Annotated[int, typer.Option("--chunks", min=1)] = 10_000,
    work_dir: WorkDir = None,
    results: Results = None,
) -> None:
    """Chunks/s of one sync with and without stored token vectors against the raw embedding
    throughput, and the dense data's bytes per chunk (bench/results/ingest.json)."""
    from bench import corpus, load

    vocab = corpus.Vocabulary.from_datasets(corpus.find_datasets(corpus.DEFAULT_DATASETS))
    _bench("ingest", work_dir, results, lambda folder: load.run_ingest(vocab, folder, chunks))


@bench_app.command("rerank")
def bench_rerank(
    dataset: Annotated[str, typer.Option("--dataset")] = "cranfield",
    windows: Annotated[int, typer.Option("--windows", min=1)] = 6,
    results: Results = None,
) -> None:
    """CPU per 20-passage rerank window by token cap and batching (bench/results/rerank.json)."""
    from bench import corpus, rerank_cost

    (found,) = corpus.find_datasets(corpus.DEFAULT_DATASETS, [dataset])
    _bench("rerank", None, results, lambda _: rerank_cost.run(found, windows=windows))


@bench_app.command("engines")
def bench_engines(
    opensearch: Annotated[str, typer.Option("--opensearch", help="OpenSearch URL for the cluster stack's sparse leg")],
    postgres: Annotated[str | None, typer.Option("--postgres", help="PostgreSQL URL for its catalog")] = None,
    redis: Annotated[str | None, typer.Option("--redis", help="Redis URL for its cache")] = None,
    datasets: Annotated[list[str] | None, typer.Option("--dataset", help="Under --datasets-root, or a path")] = None,
    root: Annotated[Path | None, typer.Option("--datasets-root", help="Folder of BEIR datasets")] = None,
    max_queries: Annotated[int | None, typer.Option("--max-queries", min=1)] = None,
    size: Annotated[int, typer.Option("--size", min=1, help="Chunks of the speed index")] = 100_000,
    first: Annotated[int, typer.Option("--first", min=1, help="Chunks of the from-empty sync")] = 10_000,
    duration: Duration = 30,
    quality: Annotated[bool, typer.Option(help="Measure quality on the judged collections")] = True,
    speed: Annotated[bool, typer.Option(help="Measure sync and retrieve speed")] = True,
    work_dir: WorkDir = None,
    results: Results = None,
) -> None:
    """The cluster engines beside the embedded stack in one run (bench/results/engines.json)."""
    from bench import corpus, engines

    found = corpus.find_datasets(root or corpus.DEFAULT_DATASETS, datasets or [])
    if not found:
        raise typer.BadParameter("no BEIR datasets found (corpus.jsonl, queries.jsonl, qrels/test.tsv)")
    cluster = engines.ClusterEngines(opensearch, postgres, redis)

    def run(folder: Path) -> dict[str, Any]:
        out: dict[str, Any] = {"engines": cluster.described()}
        if quality:
            out["quality"] = engines.run_quality(found, folder, cluster, max_queries=max_queries)
        if speed:
            vocab = corpus.Vocabulary.from_datasets(corpus.find_datasets(corpus.DEFAULT_DATASETS))
            out["speed"] = engines.run_speed(vocab, folder, cluster, size=size, first=first, duration=duration)
        return out

    _bench("engines", work_dir, results, run)


@bench_app.command("telemetry")
def bench_telemetry(
    chunks: Annotated[int, typer.Option("--chunks", min=100, help="Chunks of the synthetic index")] = 2_000,
    concurrency: Annotated[int, typer.Option("--concurrency", min=2, help="Clients of the throughput run")] = 32,
    rounds: Annotated[int, typer.Option("--rounds", min=1, help="Interleaved rounds per configuration")] = 2,
    duration: Duration = 20,
    work_dir: WorkDir = None,
    results: Results = None,
) -> None:
    """What metrics and tracing cost a retrieve: off, metrics, metrics+traces in one run."""
    from bench import corpus, telemetry

    def run(folder: Path) -> dict[str, Any]:
        vocab = corpus.Vocabulary.from_datasets(corpus.find_datasets(corpus.DEFAULT_DATASETS))
        return telemetry.run(vocab, folder, chunks=chunks, concurrency=concurrency, duration=duration, rounds=rounds)

    _bench("telemetry", work_dir, results, run)


@bench_app.command("surfaces")
def bench_surfaces(
    chunks: Annotated[int, typer.Option("--chunks", min=100, help="Chunks of the synthetic index")] = 2_000,
    concurrency: Annotated[int, typer.Option("--concurrency", min=2, help="Clients of the concurrent run")] = 32,
    rounds: Annotated[int, typer.Option("--rounds", min=1, help="Interleaved rounds per surface")] = 3,
    duration: Duration = 15,
    work_dir: WorkDir = None,
    results: Results = None,
) -> None:
    """The same retrieves over HTTP and over gRPC in one run: p50/p99 at concurrency 1 and N."""
    from bench import corpus, surfaces

    def run(folder: Path) -> dict[str, Any]:
        vocab = corpus.Vocabulary.from_datasets(corpus.find_datasets(corpus.DEFAULT_DATASETS))
        return surfaces.run(vocab, folder, chunks=chunks, concurrency=concurrency, duration=duration, rounds=rounds)

    _bench("surfaces", work_dir, results, run)


@bench_app.command("report")
def bench_report() -> None:
    """Regenerate docs/benchmarks.md and docs/bench/*.png from bench/results/*.json."""
    _needs_extra("matplotlib")
    from bench import report

    report.render()
    console.print(f"[green]wrote[/] {report.DOCS}")


def main() -> int:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    try:
        code = app(prog_name="quarry", standalone_mode=False)
    except CliError as exc:
        console.print(f"[red]error:[/] {exc}", soft_wrap=True, highlight=False)
        return exc.code
    except typer.Abort:
        console.print("aborted")
        return 130
    except typer.Exit as exc:
        return int(exc.exit_code)
    except typer.TyperException as exc:  # usage errors: Click's message, exit 2
        exc.show()  # type: ignore[attr-defined]
        return int(getattr(exc, "exit_code", EXIT_BAD_INPUT))
    except Exception as exc:
        if os.environ.get("QUARRY_DEBUG"):
            raise
        console.print(f"[red]error:[/] {type(exc).__name__}: {exc} (QUARRY_DEBUG=1 shows the traceback)",
                      soft_wrap=True, highlight=False)
        return 1
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
