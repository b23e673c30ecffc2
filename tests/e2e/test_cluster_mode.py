"""Cluster mode for real: the whole stack as processes on OpenSearch (sparse), PostgreSQL (catalog)
and Redis (response cache), driven through the official ``llama-cloud==2.19.0`` SDK, and checked
against the embedded stack (tantivy, SQLite, in-process LRU) given the same corpus and queries.

Dense search is the embedded Qdrant engine in both (no Qdrant server can be installed on these
machines), so every difference between the two answers comes from the cluster engines. Both
BM25 implementations score identically here (``test_keyword_index_contract``), so the answers
must be the same chunks in the same order with the same scores; the test reports the largest
sparse-score gap it saw.
"""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis
from llama_cloud import LlamaCloud
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from services.files.settings import FilesSettings
from services.launcher import Stack
from tests import servers
from tests.e2e.corpus import ingest_corpus, wait_synced
from tests.e2e.stack import running_stack

pytestmark = pytest.mark.e2e

API_KEY = "qk-cluster-e2e"


def _sync_url() -> str:
    """The PostgreSQL URL for a synchronous SQLAlchemy engine (psycopg 3)."""
    return FilesSettings(database_url=servers.POSTGRES_URL).resolved_database_url()


@pytest.fixture(scope="module")
def postgres_schema() -> Iterator[str]:
    schema = f"quarry_e2e_{uuid.uuid4().hex[:10]}"
    engine = create_engine(_sync_url(), poolclass=NullPool, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:
        engine.dispose()
        servers.unavailable(f"PostgreSQL unreachable at {servers.POSTGRES_URL}: {exc!r}")
    try:
        yield schema
    finally:
        with engine.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        engine.dispose()


@pytest.fixture(scope="module")
def redis_client() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(servers.REDIS_URL, socket_timeout=3)
    try:
        client.ping()
    except redis.RedisError as exc:
        servers.unavailable(f"Redis not reachable at {servers.REDIS_URL}: {exc!r}")
    yield client
    client.close()


@pytest.fixture(scope="module")
def os_prefix(opensearch_url: str) -> Iterator[str]:
    prefix = f"qe2e-{uuid.uuid4().hex[:10]}-"
    yield prefix
    with httpx.Client(base_url=opensearch_url, timeout=30) as http:
        for name in http.get(f"/{prefix}*").json():
            http.delete(f"/{name}")
        http.delete(f"/_index_template/{prefix}chunks")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, opensearch_url: str, os_prefix: str, postgres_schema: str,
            redis_client: redis.Redis) -> Iterator[Stack]:
    env = {
        "QUARRY_SPARSE_OPENSEARCH_URL": opensearch_url,
        "QUARRY_SPARSE_OPENSEARCH_INDEX_PREFIX": os_prefix,
        "QUARRY_SPARSE_OPENSEARCH_REPLICAS": "0",  # one node: replicas would stay unassigned
        "QUARRY_FILES_DATABASE_URL": servers.POSTGRES_URL,
        "QUARRY_FILES_DATABASE_SCHEMA": postgres_schema,
        "QUARRY_GATEWAY_REDIS_URL": servers.REDIS_URL,
    }
    with running_stack(tmp_path_factory.mktemp("quarry-cluster"), API_KEY, env) as stack:
        yield stack


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("quarry-embedded"), API_KEY) as stack:
        yield stack


def _client(stack: Stack) -> LlamaCloud:
    return LlamaCloud(api_key=API_KEY, base_url=stack.base_url, max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def clients(cluster: Stack, embedded: Stack) -> dict[str, LlamaCloud]:
    return {"cluster": _client(cluster), "embedded": _client(embedded)}


@pytest.fixture(scope="module")
def indexes(clients: dict[str, LlamaCloud]) -> dict[str, Any]:
    return {name: ingest_corpus(client, "cluster-corpus") for name, client in clients.items()}


def _file_ids(client: LlamaCloud, index_id: str) -> dict[str, str]:
    return {f.file_name: f.file_id for f in client.retrieval.find(index_id=index_id)}


@pytest.fixture(scope="module")
def file_ids(clients: dict[str, LlamaCloud], indexes: dict[str, Any]) -> dict[str, dict[str, str]]:
    return {name: _file_ids(clients[name], indexes[name].id) for name in clients}


def _answer(client: LlamaCloud, index_id: str, ids: dict[str, str], **kwargs: Any) -> list[dict[str, Any]]:
    """A retrieve as comparable rows: the file is named (its id differs between the stacks)."""
    by_id = {v: k for k, v in ids.items()}
    out = client.retrieval.retrieve(index_id=index_id, **kwargs)
    return [
        {"file": by_id[r.static_fields.parsed_directory_file_id], "chunk": r.static_fields.chunk_index,
         "content": r.content, "metadata": r.metadata, "score": r.score, "rerank": r.rerank_score,
         "dense": (r.model_extra or {}).get("dense_score"), "sparse": (r.model_extra or {}).get("sparse_score")}
        for r in out.results
    ]


def _static(ids: dict[str, str], file_name: str, operator: str = "eq") -> dict[str, Any]:
    value: Any = ids[file_name] if operator == "eq" else [ids[file_name]]
    return {"parsed_directory_file_id": {"operator": operator, "value": value}}


#: Queries with every knob the cluster engines see: filters pushed into OpenSearch, a file filter,
#: score thresholds, rerank on and off, one leg alone.
QUERIES: list[tuple[str, dict[str, Any]]] = [
    ("how do photovoltaic panels turn sunlight into power", {}),
    ("lighthouse storm ship anchored in the bay", {"top_k": 10, "rerank": {"enabled": False}}),
    ("lighthouse storm", {"top_k": 5, "rerank": {"top_n": 3}}),
    ("memory safety borrow checker", {"vector_pipeline_weight": 0.0, "full_text_pipeline_weight": 1.0,
                                      "rerank": {"enabled": False}}),
    ("eruption ash lava", {"vector_pipeline_weight": 0.8, "full_text_pipeline_weight": 0.2}),
    ("photovoltaic volcanoes sourdough rust lighthouse glacier", {
        "top_k": 50, "custom_filters": {"author": {"operator": "eq", "value": "Ada"}}, "rerank": {"enabled": False}}),
    ("photovoltaic volcanoes sourdough rust lighthouse glacier", {
        "top_k": 50,
        "custom_filters": {"year": [{"operator": "gte", "value": 2021}, {"operator": "lt", "value": 2023}]},
        "vector_pipeline_weight": 0.0, "full_text_pipeline_weight": 1.0, "rerank": {"enabled": False}}),
    ("photovoltaic volcanoes sourdough rust lighthouse glacier", {
        "top_k": 50, "custom_filters": {"topic": {"operator": "nin", "value": ["history", "survey"]},
                                        "draft": {"operator": "eq", "value": False}}}),
    ("bread yeast starter", {"custom_filters": {"year": {"operator": "gt", "value": 2022}}}),
    ("glacier retreated forty metres", {"top_k": 3}),
]


def _ties_in_order(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    def final(row: dict[str, Any]) -> float:
        return float(row["rerank"] if row["rerank"] is not None else row["score"])

    return sorted(rows, key=lambda r: (-round(final(r), 6), r["file"], r["chunk"]))


def _compare(left: list[dict[str, Any]], right: list[dict[str, Any]], what: str) -> float:
    """Same chunks, same order, same scores; returns the largest relative sparse-score gap.

    Results with equal final scores are ordered by chunk id, and chunk ids differ between the two
    stacks (they hash the parsed file's id, a random id): ties are compared as sets.
    """
    left, right = _ties_in_order(left), _ties_in_order(right)
    assert [(r["file"], r["chunk"]) for r in left] == [(r["file"], r["chunk"]) for r in right], what
    assert [(r["content"], r["metadata"]) for r in left] == [(r["content"], r["metadata"]) for r in right], what
    for key in ("score", "rerank", "dense", "sparse"):
        a, b = [r[key] for r in left], [r[key] for r in right]
        assert [x is None for x in a] == [x is None for x in b], (what, key)
        assert [x for x in a if x is not None] == pytest.approx([x for x in b if x is not None], rel=1e-4), (what, key)
    gaps = [abs(x["sparse"] - y["sparse"]) / max(abs(y["sparse"]), 1e-12)
            for x, y in zip(left, right, strict=True) if x["sparse"] is not None]
    return max(gaps, default=0.0)


def test_cluster_answers_match_the_embedded_stack(clients: dict[str, LlamaCloud], indexes: dict[str, Any],
                                                  file_ids: dict[str, dict[str, str]]) -> None:
    gaps = []
    for query, kwargs in QUERIES:
        answers = {name: _answer(clients[name], indexes[name].id, file_ids[name], query=query, **kwargs)
                   for name in clients}
        assert answers["cluster"], (query, kwargs)
        gaps.append(_compare(answers["cluster"], answers["embedded"], f"{query} {kwargs}"))
    print(f"\nlargest relative BM25 score gap, OpenSearch vs tantivy: {max(gaps):.2e}")
    assert max(gaps) < 1e-4


def test_filters_and_thresholds_hold_in_the_cluster(clients: dict[str, LlamaCloud], indexes: dict[str, Any],
                                                    file_ids: dict[str, dict[str, str]]) -> None:
    client, index_id, ids = clients["cluster"], indexes["cluster"].id, file_ids["cluster"]
    ada = _answer(client, index_id, ids, query="photovoltaic rust", top_k=50,
                  custom_filters={"author": {"operator": "eq", "value": "Ada"}}, rerank={"enabled": False})
    assert {r["file"] for r in ada} == {"solar.md", "rust.md"}

    for operator, expected in (("eq", {"volcano.txt"}), ("nin", None)):
        rows = {name: _answer(clients[name], indexes[name].id, file_ids[name], query="solar panels", top_k=50,
                              static_filters=_static(file_ids[name], "volcano.txt", operator))
                for name in clients}
        files = {r["file"] for r in rows["cluster"]}
        assert files == expected if expected else (files and "volcano.txt" not in files)
        _compare(rows["cluster"], rows["embedded"], f"static filter {operator}")

    everything = _answer(client, index_id, ids, query="volcano eruption ash", top_k=50, rerank={"enabled": False})
    threshold = everything[2]["score"]
    kept = {name: _answer(clients[name], indexes[name].id, file_ids[name], query="volcano eruption ash", top_k=50,
                          score_threshold=threshold, rerank={"enabled": False}) for name in clients}
    assert len(kept["cluster"]) == sum(1 for r in everything if r["score"] >= threshold)
    _compare(kept["cluster"], kept["embedded"], "score threshold")


def test_find_grep_and_read_match(clients: dict[str, LlamaCloud], indexes: dict[str, Any],
                                  file_ids: dict[str, dict[str, str]]) -> None:
    def files_view(name: str) -> dict[str, Any]:
        client, index_id, ids = clients[name], indexes[name].id, file_ids[name]
        history = ids["lighthouse-history.txt"]
        return {
            "find": sorted(f.file_name for f in client.retrieval.find(index_id=index_id, file_name_contains="o")),
            "paged": [len(client.retrieval.find(index_id=index_id, page_size=2).items)],
            "grep": [(m.start_char, m.end_char, m.content) for m in client.retrieval.grep(
                index_id=index_id, file_id=history, pattern=r"Aurora \d+", context_chars=10, page_size=5)],
            "read": client.retrieval.read(index_id=index_id, file_id=history, offset=11, max_length=200).content,
            "pdf": client.retrieval.read(index_id=index_id, file_id=ids["glacier-report.pdf"]).content,
        }

    cluster, embedded = files_view("cluster"), files_view("embedded")
    assert cluster == embedded
    assert len(cluster["grep"]) == 12 and cluster["paged"] == [2]


def test_the_cluster_engines_hold_the_data(cluster: Stack, clients: dict[str, LlamaCloud],
                                           indexes: dict[str, Any], opensearch_url: str, os_prefix: str,
                                           postgres_schema: str, redis_client: redis.Redis) -> None:
    """Not a fallback: the chunks are in OpenSearch, the catalog in PostgreSQL, the cache in Redis."""
    index_id = indexes["cluster"].id
    with httpx.Client(base_url=opensearch_url, timeout=30) as http:
        counts = {name: http.get(f"/{name}/_count").json()["count"] for name in http.get(f"/{os_prefix}*").json()}
    chunks = sum(count for name, count in counts.items() if not name.endswith(".files"))
    assert chunks > 6 and sum(counts.values()) == chunks + 6  # plus one file card per file

    engine = create_engine(_sync_url(), poolclass=NullPool)
    try:
        with engine.connect() as conn:
            tables = set(conn.execute(text(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = :s"), {"s": postgres_schema}
            ).scalars())
            assert {"indexes", "jobs"} <= tables
            assert conn.execute(text(f'SELECT count(*) FROM "{postgres_schema}".indexes WHERE id = :i'),
                                {"i": index_id}).scalar_one() == 1
    finally:
        engine.dispose()

    before = set(redis_client.scan_iter(count=1000))
    client = clients["cluster"]
    query = f"which keeper recorded the storm {uuid.uuid4().hex[:6]}"
    first = client.retrieval.retrieve(index_id=index_id, query=query)
    second = client.retrieval.retrieve(index_id=index_id, query=query)
    assert (first.model_extra or {}).get("cached") is False and (second.model_extra or {}).get("cached") is True
    assert set(redis_client.scan_iter(count=1000)) - before, "the answer was cached in Redis"


def test_delete_a_file_and_resync(clients: dict[str, LlamaCloud], indexes: dict[str, Any],
                                  file_ids: dict[str, dict[str, str]]) -> None:
    query = "volcano eruption ash lava magma"
    for name, client in clients.items():
        index = indexes[name]
        directory_files = {f.display_name: f.id for f in client.beta.directories.files.list(index.source_directory_id)}
        client.beta.directories.files.delete(directory_files["volcano.txt"], directory_id=index.source_directory_id)
        client.beta.directories.files.upload(
            index.source_directory_id,
            upload_file=("kettle.txt", io.BytesIO(b"The kettle is made of copper, a metal that conducts heat.")),
            metadata=json.dumps({"year": 2025, "author": "Kim", "topic": "kitchen", "draft": False}),
        )
        client.indexes.sync(index.id)
        wait_synced(client, index.id)
    after = {name: _file_ids(clients[name], indexes[name].id) for name in clients}
    assert set(after["cluster"]) == set(after["embedded"]) == (set(file_ids["cluster"]) - {"volcano.txt"}) | {
        "kettle.txt"}
    rows = {name: _answer(clients[name], indexes[name].id, after[name], query=query, top_k=20) for name in clients}
    assert "volcano.txt" not in {r["file"] for r in rows["cluster"]}
    _compare(rows["cluster"], rows["embedded"], "after delete and re-sync")
    copper = {name: _answer(clients[name], indexes[name].id, after[name], query="copper kettle", top_k=3)
              for name in clients}
    assert copper["cluster"][0]["file"] == "kettle.txt"
    _compare(copper["cluster"], copper["embedded"], "new file")


def test_every_process_survives(cluster: Stack, embedded: Stack) -> None:
    assert cluster.failed() == [] and embedded.failed() == []
    assert not list(cluster.data_dir.rglob("catalog.db")), "the cluster catalog is PostgreSQL, not SQLite"
    assert not list((cluster.data_dir / "sparse").rglob("meta.json")), "the cluster keyword index is OpenSearch"
    assert list((embedded.data_dir / "sparse").rglob("meta.json")), "the embedded one is tantivy"
