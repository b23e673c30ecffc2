"""The public gRPC API on the running stack: the same queries over gRPC only and over HTTP only give
the same answers position by position (and share the cache entry); auth, the error codes with
their field paths, the caller's deadline as the budget, health and reflection."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf import json_format, struct_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from llama_cloud import LlamaCloud

from services._proto.quarry.retrieval.v1 import retrieval_pb2 as pb
from services._proto.quarry.retrieval.v1 import retrieval_pb2_grpc as pb_grpc
from services.launcher import Stack
from tests.e2e.corpus import ingest_corpus
from tests.e2e.stack import running_stack

pytestmark = pytest.mark.e2e

API_KEY = "qk-grpc-api"
AUTH = (("authorization", f"Bearer {API_KEY}"),)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("quarry-grpc"), API_KEY) as s:
        yield s


@pytest.fixture(scope="module")
def index_id(stack: Stack) -> str:
    client = LlamaCloud(api_key=API_KEY, base_url=stack.base_url, max_retries=0, timeout=60)
    return str(ingest_corpus(client, "grpc-corpus").id)


@pytest.fixture(scope="module")
def stub(stack: Stack) -> Iterator[pb_grpc.RetrievalStub]:
    with grpc.insecure_channel(stack.grpc_address) as channel:
        yield pb_grpc.RetrievalStub(channel)


@pytest.fixture(scope="module")
def http(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.base_url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60) as c:
        yield c


def _value(v: Any) -> struct_pb2.Value:
    out = struct_pb2.Value()
    json_format.ParseDict(v, out)
    return out


def cond(key: str, op: int, value: Any) -> pb.Condition:
    return pb.Condition(key=key, operator=op, value=_value(value))


# (gRPC request fields, HTTP v2 body) for chunks; the v2 body carries the index id.
V2_CASES: list[tuple[dict[str, Any], dict[str, Any]]] = [
    ({"query": "lighthouse keeper storm log"}, {"query": "lighthouse keeper storm log"}),
    ({"query": "solar panels electricity", "top_k": 3}, {"query": "solar panels electricity", "top_k": 3}),
    ({"query": "magma eruption ash", "rerank": pb.RerankOptions(enabled=False)},
     {"query": "magma eruption ash", "rerank": {"enabled": False}}),
    ({"query": "bread starter yeast", "rerank": pb.RerankOptions(enabled=True, top_n=2)},
     {"query": "bread starter yeast", "rerank": {"enabled": True, "top_n": 2}}),
    ({"query": "memory safety compile time", "dense_weight": 1.0, "sparse_weight": 0.0},
     {"query": "memory safety compile time", "vector_pipeline_weight": 1.0, "full_text_pipeline_weight": 0.0}),
    ({"query": "memory safety compile time", "dense_weight": 0.0, "sparse_weight": 1.0},
     {"query": "memory safety compile time", "vector_pipeline_weight": 0.0, "full_text_pipeline_weight": 1.0}),
    ({"query": "glacier retreat meltwater", "fusion": pb.FUSION_RRF}, {"query": "glacier retreat meltwater",
                                                                       "fusion": "rrf"}),
    ({"query": "glacier retreat meltwater", "fusion": pb.FUSION_RELATIVE_SCORE, "num_candidates": 5},
     {"query": "glacier retreat meltwater", "fusion": "relative_score", "num_candidates": 5}),
    ({"query": "energy and software", "custom_filters": [cond("author", pb.OPERATOR_EQ, "Ada")]},
     {"query": "energy and software", "custom_filters": {"author": {"operator": "eq", "value": "Ada"}}}),
    ({"query": "what happened in which year",
      "custom_filters": [cond("year", pb.OPERATOR_GTE, 2021), cond("year", pb.OPERATOR_LT, 2024)]},
     {"query": "what happened in which year", "custom_filters": {
         "year": [{"operator": "gte", "value": 2021}, {"operator": "lt", "value": 2024}]}}),
    ({"query": "topics", "custom_filters": [cond("topic", pb.OPERATOR_IN, ["food", "geology"])],
      "rerank": pb.RerankOptions(enabled=False)},
     {"query": "topics", "custom_filters": {"topic": {"operator": "in", "value": ["food", "geology"]}},
      "rerank": {"enabled": False}}),
    ({"query": "drafts", "custom_filters": [cond("draft", pb.OPERATOR_NE, True)]},
     {"query": "drafts", "custom_filters": {"draft": {"operator": "ne", "value": True}}}),
    ({"query": "lighthouse", "score_threshold": 0.3}, {"query": "lighthouse", "score_threshold": 0.3}),
    ({"query": "ship named Aurora", "top_k": 20, "rerank": pb.RerankOptions(enabled=False)},
     {"query": "ship named Aurora", "top_k": 20, "rerank": {"enabled": False}}),
]

# (gRPC request fields, HTTP pipeline-retrieve body) for the modes and the filter tree.
TREE = pb.FilterGroup(combinator=pb.COMBINATOR_OR, filters=[
    pb.Filter(condition=cond("topic", pb.OPERATOR_EQ, "energy")),
    pb.Filter(group=pb.FilterGroup(filters=[pb.Filter(condition=cond("year", pb.OPERATOR_GTE, 2022)),
                                            pb.Filter(condition=cond("draft", pb.OPERATOR_EQ, True))])),
])
TREE_JSON = {"condition": "or", "filters": [
    {"key": "topic", "operator": "==", "value": "energy"},
    {"filters": [{"key": "year", "operator": ">=", "value": 2022}, {"key": "draft", "operator": "==", "value": True}]},
]}
PIPELINE_CASES: list[tuple[dict[str, Any], dict[str, Any]]] = [
    ({"query": "volcano eruption", "filter_tree": TREE}, {"query": "volcano eruption", "search_filters": TREE_JSON}),
    ({"query": "anything", "filter_tree": pb.FilterGroup(combinator=pb.COMBINATOR_NOT, filters=[
        pb.Filter(condition=cond("author", pb.OPERATOR_IN, ["Ada", "Eve"]))]),
      "rerank": pb.RerankOptions(enabled=False)},
     {"query": "anything", "search_filters": {"condition": "not", "filters": [
         {"key": "author", "operator": "in", "value": ["Ada", "Eve"]}]}, "enable_reranking": False}),
    ({"query": "summarize the lighthouse log", "retrieval_mode": pb.RETRIEVAL_MODE_FILES_VIA_CONTENT},
     {"query": "summarize the lighthouse log", "retrieval_mode": "files_via_content"}),
    ({"query": "keeper storms", "retrieval_mode": pb.RETRIEVAL_MODE_FILES_VIA_CONTENT, "files_top_k": 2},
     {"query": "keeper storms", "retrieval_mode": "files_via_content", "files_top_k": 2}),
    ({"query": "rust ownership", "retrieval_mode": pb.RETRIEVAL_MODE_FILES_VIA_METADATA},
     {"query": "rust ownership", "retrieval_mode": "files_via_metadata"}),
    ({"query": "what does volcano.txt say", "retrieval_mode": pb.RETRIEVAL_MODE_AUTO_ROUTED},
     {"query": "what does volcano.txt say", "retrieval_mode": "auto_routed"}),
    ({"query": "give me an overview of solar power", "retrieval_mode": pb.RETRIEVAL_MODE_AUTO_ROUTED},
     {"query": "give me an overview of solar power", "retrieval_mode": "auto_routed"}),
    ({"query": "borrow checker", "retrieval_mode": pb.RETRIEVAL_MODE_AUTO_ROUTED},
     {"query": "borrow checker", "retrieval_mode": "auto_routed"}),
    ({"query": "bread", "dense_weight": 0.25, "sparse_weight": 0.75, "top_k": 4, "num_candidates": 300,
      "dense_similarity_cutoff": 0.1},
     {"query": "bread", "alpha": 0.25, "dense_similarity_top_k": 4, "sparse_similarity_top_k": 300,
      "dense_similarity_cutoff": 0.1}),
]


def _v2_rows(answer: dict[str, Any]) -> list[tuple[Any, ...]]:
    return [(r["static_fields"]["parsed_directory_file_id"], r["static_fields"]["chunk_index"], r["content"],
             r["metadata"], r["score"], r["dense_score"], r["sparse_score"], r["rerank_score"])
            for r in answer["results"]]


def _grpc_rows(response: pb.RetrieveResponse) -> list[tuple[Any, ...]]:
    def opt(m: Any, name: str) -> Any:
        return getattr(m, name) if m.HasField(name) else None

    return [(r.static_fields.parsed_directory_file_id, r.static_fields.chunk_index, r.content,
             json_format.MessageToDict(r.metadata), r.score, opt(r, "dense_score"), opt(r, "sparse_score"),
             opt(r, "rerank_score")) for r in response.results]


def _same(a: list[tuple[Any, ...]], b: list[tuple[Any, ...]]) -> None:
    assert len(a) == len(b) and a, (a, b)
    for x, y in zip(a, b, strict=True):
        assert x[:4] == y[:4]
        assert [v is None for v in x[4:]] == [v is None for v in y[4:]]
        assert [v for v in x[4:] if v is not None] == pytest.approx([v for v in y[4:] if v is not None], rel=1e-9)


@pytest.mark.parametrize("case", range(len(V2_CASES)))
def test_grpc_and_http_v2_give_the_same_chunks(case: int, stub: pb_grpc.RetrievalStub, http: httpx.Client,
                                               index_id: str) -> None:
    fields, body = V2_CASES[case]
    request = pb.RetrieveRequest(index_id=index_id, **fields)
    # Alternate which surface asks first: the second is served the first one's cache entry.
    if case % 2:
        over_grpc = stub.Retrieve(request, metadata=AUTH, timeout=30)
        over_http = http.post("/api/v1/retrieval/retrieve", json={"index_id": index_id, **body}).json()
        assert over_grpc.cached is False and over_http["cached"] is True
    else:
        over_http = http.post("/api/v1/retrieval/retrieve", json={"index_id": index_id, **body}).json()
        over_grpc = stub.Retrieve(request, metadata=AUTH, timeout=30)
        assert over_http["cached"] is False and over_grpc.cached is True
    assert not over_grpc.degraded and over_http["degraded"] is None
    _same(_grpc_rows(over_grpc), _v2_rows(over_http))
    assert over_grpc.retrieval_mode == pb.RETRIEVAL_MODE_CHUNKS and "total" in over_grpc.latency


def test_answers_computed_on_each_surface_are_identical(stub: pb_grpc.RetrievalStub, http: httpx.Client,
                                                       index_id: str) -> None:
    """Above, the second surface is served the first one's cache entry (which shows both built the
    same plan). Here both compute: top_k 7 and 8 are different plans (different entries) whose
    first seven results are the same, since depth, fusion and the rerank window do not depend on it."""
    q = "fog bells lamp oil winter nights"
    over_grpc = stub.Retrieve(pb.RetrieveRequest(index_id=index_id, query=q, top_k=7), metadata=AUTH, timeout=30)
    over_http = http.post("/api/v1/retrieval/retrieve", json={"index_id": index_id, "query": q, "top_k": 8}).json()
    assert over_grpc.cached is False and over_http["cached"] is False
    _same(_grpc_rows(over_grpc), _v2_rows(over_http)[:7])


def _pipeline_rows(answer: dict[str, Any]) -> list[tuple[Any, ...]]:
    return [(n["node"]["id_"], n["node"]["text"], n["node"]["extra_info"], n["score"])
            for n in answer["retrieval_nodes"]]


def _grpc_nodes(response: pb.RetrieveResponse) -> list[tuple[Any, ...]]:
    if response.files:
        return [(f.file_id, f.text, json_format.MessageToDict(f.metadata), f.score) for f in response.files]
    return [(r.chunk_id, r.content, json_format.MessageToDict(r.metadata),
             r.rerank_score if r.HasField("rerank_score") else r.score) for r in response.results]


@pytest.mark.parametrize("case", range(len(PIPELINE_CASES)))
def test_grpc_and_the_pipeline_retrieve_give_the_same_nodes(case: int, stub: pb_grpc.RetrievalStub,
                                                            http: httpx.Client, index_id: str) -> None:
    fields, body = PIPELINE_CASES[case]
    over_grpc = stub.Retrieve(pb.RetrieveRequest(index_id=index_id, **fields), metadata=AUTH, timeout=30)
    over_http = http.post(f"/api/v1/pipelines/{index_id}/retrieve", json=body).json()
    assert not over_grpc.degraded and "degraded" not in over_http["metadata"]
    grpc_rows, http_rows = _grpc_nodes(over_grpc), _pipeline_rows(over_http)
    assert [r[:3] for r in grpc_rows] == [r[:3] for r in http_rows] and grpc_rows
    assert [r[3] for r in grpc_rows] == pytest.approx([r[3] for r in http_rows], rel=1e-9)
    mode = pb.RetrievalMode.Name(over_grpc.retrieval_mode).removeprefix("RETRIEVAL_MODE_").lower()
    assert mode == over_http["metadata"]["retrieval_mode"]
    assert over_grpc.routing_reason == over_http["metadata"].get("routing_reason", "")


def test_find_grep_read_and_the_index_lookups(stub: pb_grpc.RetrievalStub, http: httpx.Client,
                                              index_id: str) -> None:
    found = stub.Find(pb.FindRequest(index_id=index_id, file_name_contains="o", page_size=2), metadata=AUTH,
                      timeout=10)
    over_http = http.post("/api/v1/retrieval/files/find",
                          json={"index_id": index_id, "file_name_contains": "o", "page_size": 2}).json()
    assert [(f.file_id, f.file_name) for f in found.items] == [(f["file_id"], f["file_name"])
                                                                for f in over_http["items"]]
    assert found.next_page_token == over_http["next_page_token"] and found.total_size == over_http["total_size"]
    rest = stub.Find(pb.FindRequest(index_id=index_id, file_name_contains="o", page_size=2,
                                    page_token=found.next_page_token), metadata=AUTH, timeout=10)
    assert rest.items and {f.file_id for f in rest.items}.isdisjoint(f.file_id for f in found.items)

    history = stub.Find(pb.FindRequest(index_id=index_id, file_name="lighthouse-history.txt"), metadata=AUTH,
                        timeout=10).items[0]
    grep = stub.Grep(pb.GrepRequest(index_id=index_id, file_id=history.file_id, pattern=r"Aurora \d+",
                                    context_chars=5, page_size=3), metadata=AUTH, timeout=10)
    grep_http = http.post("/api/v1/retrieval/files/grep", json={
        "index_id": index_id, "file_id": history.file_id, "pattern": r"Aurora \d+", "context_chars": 5,
        "page_size": 3}).json()
    assert [(m.content, m.start_char, m.end_char) for m in grep.items] == [
        (m["content"], m["start_char"], m["end_char"]) for m in grep_http["items"]]
    assert len(grep.items) == 3 and grep.total_size == 12 and grep.next_page_token
    read = stub.Read(pb.ReadRequest(index_id=index_id, file_id=history.file_id, offset=3, max_length=40),
                     metadata=AUTH, timeout=10)
    assert read.content == http.post("/api/v1/retrieval/files/read", json={
        "index_id": index_id, "file_id": history.file_id, "offset": 3, "max_length": 40}).json()["content"]
    assert len(read.content) == 40

    listed = stub.ListIndexes(pb.ListIndexesRequest(), metadata=AUTH, timeout=10)
    assert index_id in [i.id for i in listed.items]
    one = stub.GetIndex(pb.GetIndexRequest(index_id=index_id), metadata=AUTH, timeout=10)
    shown = http.get(f"/api/v1/indexes/{index_id}").json()
    assert (one.name, one.sync_status, one.sync_progress.total_items) == (
        shown["name"], shown["sync_status"], shown["sync_progress"]["total_items"])
    assert dict(one.engine_health) == shown["engine_health"] == {"sparse": "ok"}


def _violations(exc: grpc.RpcError) -> list[str]:
    raw = dict(exc.trailing_metadata() or ()).get("grpc-status-details-bin")  # type: ignore[attr-defined]
    assert raw, "no google.rpc.Status in the trailers"
    status = status_pb2.Status.FromString(raw)
    bad = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad)
    return [v.field for v in bad.field_violations]


def _error(call: Any, *args: Any, **kwargs: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call(*args, **kwargs)
    return caught.value


def test_errors_map_to_their_codes_with_field_paths(stub: pb_grpc.RetrievalStub, http: httpx.Client,
                                                    index_id: str) -> None:
    ask = pb.RetrieveRequest(index_id=index_id, query="solar")
    assert _error(stub.Retrieve, ask, timeout=10).code() == grpc.StatusCode.UNAUTHENTICATED
    wrong = (("authorization", "Bearer qk-not-a-key"),)
    assert _error(stub.Retrieve, ask, metadata=wrong, timeout=10).code() == grpc.StatusCode.UNAUTHENTICATED
    unknown = pb.RetrieveRequest(index_id="00000000-0000-0000-0000-000000000000", query="solar")
    assert _error(stub.Retrieve, unknown, metadata=AUTH, timeout=10).code() == grpc.StatusCode.NOT_FOUND

    # A bad value deep in the filters: the same path as the HTTP 422 loc (less "body").
    bad = pb.RetrieveRequest(index_id=index_id, query="solar", custom_filters=[
        cond("year", pb.OPERATOR_GTE, 2021), cond("year", pb.OPERATOR_LT, ["a", "b"])])
    err = _error(stub.Retrieve, bad, metadata=AUTH, timeout=10)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    bounds = [{"operator": "gte", "value": 2021}, {"operator": "lt", "value": ["a", "b"]}]
    refused = http.post("/api/v1/retrieval/retrieve",
                        json={"index_id": index_id, "query": "solar", "custom_filters": {"year": bounds}})
    assert refused.json()["detail"][0]["loc"] == ["body", "custom_filters", "year", 1, "value"]
    assert _violations(err) == ["custom_filters.year[1].value"]

    deep = pb.RetrieveRequest(index_id=index_id, query="solar", filter_tree=pb.FilterGroup(filters=[
        pb.Filter(condition=cond("year", pb.OPERATOR_EQ, 1)),
        pb.Filter(group=pb.FilterGroup(filters=[pb.Filter(condition=cond("year", pb.OPERATOR_GT, "soon"))]))]))
    err = _error(stub.Retrieve, deep, metadata=AUTH, timeout=10)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _violations(err) == ["filter_tree.filters[1].filters[0].value"]

    several = pb.RetrieveRequest(index_id=index_id, query="", top_k=0, files_top_k=500)
    assert set(_violations(_error(stub.Retrieve, several, metadata=AUTH, timeout=10))) == {
        "query", "top_k", "files_top_k"}
    both_off = pb.RetrieveRequest(index_id=index_id, query="solar", dense_weight=0, sparse_weight=0)
    assert _violations(_error(stub.Retrieve, both_off, metadata=AUTH, timeout=10)) == ["dense_weight"]
    regex = pb.GrepRequest(index_id=index_id, file_id="x", pattern="(")
    assert _error(stub.Grep, regex, metadata=AUTH, timeout=10).code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _violations(_error(stub.GetIndex, pb.GetIndexRequest(), metadata=AUTH, timeout=10)) == ["index_id"]


def test_a_short_client_deadline_is_deadline_exceeded(stub: pb_grpc.RetrievalStub, stack: Stack,
                                                     index_id: str) -> None:
    """With dense stopped a retrieve would wait for its leg deadline; the caller's 0.4 s deadline is
    the budget instead (tests/unit/test_grpc_api.py shows the legs' calls cancelled with it)."""
    stack.signal("dense", signal.SIGSTOP)
    try:
        err = _error(stub.Retrieve, pb.RetrieveRequest(index_id=index_id, query="deadline probe one"),
                     metadata=AUTH, timeout=0.4)
    finally:
        stack.signal("dense", signal.SIGCONT)
    assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    after = stub.Retrieve(pb.RetrieveRequest(index_id=index_id, query="deadline probe two"), metadata=AUTH,
                          timeout=30)
    assert after.results and not after.degraded


def test_health_and_reflection_answer_for_the_service(stack: Stack) -> None:
    with grpc.insecure_channel(stack.grpc_address) as channel:
        checks = health_pb2_grpc.HealthStub(channel)
        status = checks.Check(health_pb2.HealthCheckRequest(service="quarry.retrieval.v1.Retrieval"), timeout=5)
        assert status.status == health_pb2.HealthCheckResponse.SERVING
        reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
        answers = list(reflect.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                                                    timeout=5))
        names = {s.name for s in answers[0].list_services_response.service}
        assert "quarry.retrieval.v1.Retrieval" in names and "grpc.health.v1.Health" in names
        described = list(reflect.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(
            file_containing_symbol="quarry.retrieval.v1.Retrieval")]), timeout=5))
        assert described[0].file_descriptor_response.file_descriptor_proto


def test_a_go_client_gets_the_answers_the_python_client_gets(stub: pb_grpc.RetrievalStub, stack: Stack,
                                                             index_id: str) -> None:
    """A client generated from the proto in Go (tests/grpc_clients/go) against the running stack."""
    from tests import servers
    from tests.grpc_clients.go_client import GoUnavailable, build_go_client, run_go_client

    try:
        binary = build_go_client()
    except GoUnavailable as exc:
        servers.unavailable(f"cannot build the Go client: {exc}")
    cases = [V2_CASES[1][0], V2_CASES[9][0], PIPELINE_CASES[0][0], PIPELINE_CASES[3][0], V2_CASES[3][0]]
    requests = [pb.RetrieveRequest(index_id=index_id, **fields) for fields in cases]
    answers = run_go_client(binary, stack.grpc_address, API_KEY,
                            [json_format.MessageToDict(r, preserving_proto_field_name=True) for r in requests])
    for request, answer in zip(requests, answers, strict=True):
        assert "error" not in answer, answer
        from_go = json_format.ParseDict(answer, pb.RetrieveResponse())
        from_python = stub.Retrieve(request, metadata=AUTH, timeout=30)
        if from_go.files:
            assert _grpc_nodes(from_go) == _grpc_nodes(from_python)
        else:
            _same(_grpc_rows(from_go), _grpc_rows(from_python))
    wrong = run_go_client(binary, stack.grpc_address, "qk-wrong", [json_format.MessageToDict(requests[0])])
    assert wrong[0]["error"]["code"] == "UNAUTHENTICATED"
