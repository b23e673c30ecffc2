"""The legacy pipeline surface's pure parts: the MetadataFilters tree, the plan, filter
inference, routing rules, node shaping and status mapping."""

from __future__ import annotations

import enum

import pydantic
import pytest

from gateway import legacy_models as lm
from gateway.filters import FilterError, compile_metadata_filters
from gateway.fusion import Fused
from gateway.models import RetrieveRequest
from gateway.pipelines import (
    WantedPage,
    best_per_file,
    chunk_node,
    infer_filters,
    names_file,
    pages_of,
    shown_file_id,
)
from gateway.requests import legacy_query, v2_query
from gateway.retrieval import Plan, Result
from gateway.routes.pipelines import pipeline_status
from gateway.settings import GatewaySettings
from gateway.usecases import plan_for
from services._proto.quarry.files.v1 import files_pb2
from services.common.domain import And, Chunk, Condition, Not, Op, Or


def tree(filters: list[dict[str, object]], condition: str | None = None) -> lm.MetadataFilters:
    return lm.MetadataFilters.model_validate({"filters": filters, "condition": condition})


@pytest.mark.parametrize(
    ("operator", "value", "expected"),
    [
        ("==", 2022, Condition("year", Op.EQ, (2022.0,))),
        (None, "Ada", Condition("year", Op.EQ, ("Ada",))),
        ("!=", "Ada", Condition("year", Op.NE, ("Ada",))),
        (">", 1, Condition("year", Op.GT, (1.0,))),
        ("<", 1, Condition("year", Op.LT, (1.0,))),
        (">=", 1.5, Condition("year", Op.GTE, (1.5,))),
        ("<=", 1, Condition("year", Op.LTE, (1.0,))),
        ("in", ["a", "b"], Condition("year", Op.IN, ("a", "b"))),
        ("nin", "a", Condition("year", Op.NIN, ("a",))),
        ("any", ["a"], Condition("year", Op.ANY, ("a",))),
        ("all", ["a", "b"], Condition("year", Op.ALL, ("a", "b"))),
        ("contains", "a", Condition("year", Op.CONTAINS, ("a",))),
        ("text_match", "Vector Data", Condition("year", Op.TEXT_MATCH, ("Vector Data",))),
        ("text_match_insensitive", "x", Condition("year", Op.TEXT_MATCH_INSENSITIVE, ("x",))),
        ("is_empty", None, Condition("year", Op.IS_EMPTY, ())),
    ],
)
def test_every_legacy_operator_compiles(operator: str | None, value: object, expected: Condition) -> None:
    assert compile_metadata_filters(tree([{"key": "year", "value": value, "operator": operator}])) == expected


def test_nested_and_or_not() -> None:
    nested = tree([
        {"key": "a", "value": 1, "operator": "=="},
        {"filters": [{"key": "b", "value": 2, "operator": ">"}, {"key": "c", "value": "x"}], "condition": "or"},
        {"filters": [{"key": "d", "value": "y"}, {"key": "e", "value": "z"}], "condition": "not"},
    ])
    a, b, c = Condition("a", Op.EQ, (1.0,)), Condition("b", Op.GT, (2.0,)), Condition("c", Op.EQ, ("x",))
    d, e = Condition("d", Op.EQ, ("y",)), Condition("e", Op.EQ, ("z",))
    # NOT means "none of its filters match", as in LlamaIndex.
    assert compile_metadata_filters(nested) == And((a, Or((b, c)), Not(Or((d, e)))))


def test_empty_tree_is_no_filter() -> None:
    assert compile_metadata_filters(tree([])) is None
    assert compile_metadata_filters(None) is None


@pytest.mark.parametrize(
    ("filters", "loc"),
    [
        ([{"key": "y", "value": "soon", "operator": ">"}], ("body", "search_filters", "filters", 0, "value")),
        ([{"key": "y", "value": None, "operator": "=="}], ("body", "search_filters", "filters", 0, "value")),
        ([{"key": "y", "value": [1, 2], "operator": "=="}], ("body", "search_filters", "filters", 0, "value")),
        ([{"key": "y", "value": 3, "operator": "text_match"}], ("body", "search_filters", "filters", 0, "value")),
        ([{"key": "$file_id", "value": "x"}], ("body", "search_filters", "filters", 0, "key")),
        (
            [{"filters": [{"key": "ok", "value": 1}, {"key": "y", "value": [], "operator": "in"}]}],
            ("body", "search_filters", "filters", 0, "filters", 1, "value"),
        ),
    ],
)
def test_bad_filters_name_the_field(filters: list[dict[str, object]], loc: tuple[object, ...]) -> None:
    with pytest.raises(FilterError) as err:
        compile_metadata_filters(tree(filters))
    assert err.value.loc == loc


def test_unknown_operator_is_a_validation_error() -> None:
    with pytest.raises(pydantic.ValidationError):
        tree([{"key": "y", "value": 1, "operator": "~="}])


def legacy_plan(index_id: str, body: lm.PipelineRetrieveRequest, settings: GatewaySettings) -> Plan:
    return plan_for(legacy_query(index_id, body, settings, None), settings)


def test_legacy_defaults_match_the_v2_defaults() -> None:
    settings = GatewaySettings()
    legacy = legacy_plan("i", lm.PipelineRetrieveRequest(query="q"), settings)
    v2 = plan_for(v2_query(RetrieveRequest(index_id="i", query="q")), settings)
    assert legacy == v2
    legacy = legacy_plan("i", lm.PipelineRetrieveRequest(query="q", dense_similarity_top_k=7), settings)
    v2 = plan_for(v2_query(RetrieveRequest(index_id="i", query="q", top_k=7)), settings)
    assert legacy == v2


def test_legacy_knobs() -> None:
    body = lm.PipelineRetrieveRequest(
        query="q", alpha=0.25, enable_reranking=False, rerank_top_n=3, sparse_similarity_top_k=400,
        dense_similarity_cutoff=0.3,
    )
    plan = legacy_plan("i", body, GatewaySettings())
    assert (plan.dense_weight, plan.sparse_weight) == (0.25, 0.75)
    assert plan.rerank is False and plan.rerank_top_n == 3
    assert plan.num_candidates == 400 and plan.dense_cutoff == 0.3
    assert legacy_plan("i", lm.PipelineRetrieveRequest(query="q", alpha=0), GatewaySettings()).dense_weight == 0


class Topic(enum.StrEnum):
    ENERGY = "energy"
    FOOD = "food"
    DEEP_SEA = "deep sea"


class Schema(pydantic.BaseModel):
    topic: Topic | None = None
    year: int | None = None
    kind: str = "report"


def test_filters_are_inferred_from_enum_values_in_the_query() -> None:
    schema = Schema.model_json_schema()
    node, shown, note = infer_filters(schema, "Food and wine pairings")
    assert node == Condition("topic", Op.EQ, ("food",))
    assert shown is not None and shown.filters[0] == lm.MetadataFilter(key="topic", value="food", operator="==")
    assert note == "inferred"
    node, _, _ = infer_filters(schema, "deep sea energy")
    assert node == Condition("topic", Op.IN, ("energy", "deep sea"))


def test_no_inference_without_an_allowed_value_in_the_query() -> None:
    node, shown, note = infer_filters(Schema.model_json_schema(), "reports from 2021 about seafood")
    assert node is None and shown is None
    assert note.startswith("not inferred")
    assert infer_filters(None, "anything") == (None, None, "")


@pytest.mark.parametrize(
    ("query", "name", "named"),
    [
        ("what does quarterly-report.pdf say about revenue", "quarterly-report.pdf", True),
        ("what does the quarterly report say", "quarterly-report.pdf", True),
        ("open QUARTERLY_REPORT please", "quarterly_report.txt", True),
        ("revenue by quarter", "quarterly-report.pdf", False),
        ("a b", "a.md", False),
    ],
)
def test_names_file(query: str, name: str, named: bool) -> None:
    assert names_file(query, name) is named


def chunk(cid: str, file_id: str, pages: tuple[int, int] = (0, 0), source: str = "") -> Chunk:
    return Chunk(id=cid, index_id="i", file_id=file_id, content=f"text {cid}", file_name=f"{file_id}.pdf",
                 metadata={"k": "v"}, start_char=5, end_char=11, page_start=pages[0], page_end=pages[1],
                 source_id=source)


def result(c: Chunk, score: float, rerank: float | None = None) -> Result:
    return Result(Fused(chunk=c, score=score, dense_score=None, sparse_score=None), rerank)


def test_chunk_node_carries_offsets_metadata_and_the_source_document() -> None:
    node = chunk_node(result(chunk("c1", "f1", source="docs/a"), 0.4, rerank=0.9))
    assert node.score == 0.9
    assert node.node.id_ == "c1" and node.node.extra_info == {"k": "v"}
    assert (node.node.start_char_idx, node.node.end_char_idx) == (5, 11)
    assert node.node.relationships is not None and node.node.relationships["1"].node_id == "docs/a"


def test_files_ranked_by_their_best_chunk() -> None:
    ranked = best_per_file([
        result(chunk("a", "f1"), 0.9), result(chunk("b", "f2"), 0.8), result(chunk("c", "f1"), 0.7),
    ])
    assert [(f.chunk.file_id, f.score) for f in ranked] == [("f1", 0.9), ("f2", 0.8)]


def test_pages_of_results() -> None:
    touched = [(chunk("a", "f1", (2, 3)), 0.9), (chunk("b", "f1", (3, 3)), 0.5), (chunk("c", "f2"), 0.4)]
    assert pages_of(touched, whole_files=False) == [
        WantedPage("f1", 1, 0.9, "f1.pdf", "f1"), WantedPage("f1", 2, 0.9, "f1.pdf", "f1"),
    ]
    assert pages_of(touched[:1], whole_files=True) == [WantedPage("f1", -1, 0.9, "f1.pdf", "f1")]


def test_image_nodes_name_an_uploaded_file_by_its_upload_id() -> None:
    uploaded = Chunk(id="c", index_id="i", file_id="parsed-1", content="x", metadata={"file_id": "up-1"},
                     source_id="up-1")
    document = Chunk(id="d", index_id="i", file_id="parsed-2", content="x", source_id="docs/a")
    assert shown_file_id(uploaded) == "up-1"
    assert shown_file_id(document) == "parsed-2"


@pytest.mark.parametrize(
    ("job", "failed", "status"),
    [
        (None, 0, "NOT_STARTED"),
        ("pending", 0, "IN_PROGRESS"),
        ("running", 0, "IN_PROGRESS"),
        ("succeeded", 0, "SUCCESS"),
        ("succeeded", 2, "PARTIAL_SUCCESS"),
        ("failed", 0, "ERROR"),
        ("cancelled", 0, "CANCELLED"),
    ],
)
def test_pipeline_status(job: str | None, failed: int, status: str) -> None:
    index = files_pb2.Index(id="i", last_job_failed_items=failed)
    if job is not None:
        index.last_job.CopyFrom(files_pb2.Job(id="j", status=job, error="boom" if job == "failed" else ""))
    shaped = pipeline_status(index)
    assert shaped.status == status
    if status in ("ERROR", "PARTIAL_SUCCESS"):
        assert shaped.error and shaped.error[0].job_id == "j"
