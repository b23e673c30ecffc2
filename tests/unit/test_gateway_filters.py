from __future__ import annotations

import pytest

from gateway.filters import FilterError, compile_custom_filters, compile_static_filters, conjunction
from gateway.models import CustomFilter, RangeBound, RetrieveRequest, StaticFilters, StrFilter
from services.common.domain import FILE_ID_FIELD, And, Condition, Op


def test_each_field_becomes_a_condition_and_null_fields_are_ignored() -> None:
    nodes = compile_custom_filters({
        "year": CustomFilter(operator="gte", value=2022),
        "author": CustomFilter(operator="in", value=["Ada", "Eve"]),
        "draft": CustomFilter(operator="eq", value=True),
        "skip": None,
    })
    assert nodes == [
        Condition("year", Op.GTE, (2022.0,)),
        Condition("author", Op.IN, ("Ada", "Eve")),
        Condition("draft", Op.EQ, (True,)),
    ]


def test_range_list_form_is_an_and_of_bounds() -> None:
    bounds = [RangeBound(operator="gte", value=2020), RangeBound(operator="lt", value=2023)]
    nodes = compile_custom_filters({"year": bounds})
    assert conjunction(nodes) == And((Condition("year", Op.GTE, (2020.0,)), Condition("year", Op.LT, (2023.0,))))


def test_scalar_in_is_a_one_element_list() -> None:
    assert compile_custom_filters({"a": CustomFilter(operator="nin", value="x")}) == [Condition("a", Op.NIN, ("x",))]


@pytest.mark.parametrize(
    ("spec", "loc"),
    [
        ({"year": CustomFilter(operator="gt", value="soon")}, ("body", "custom_filters", "year", "value")),
        ({"year": CustomFilter(operator="eq", value=[1.0, 2.0])}, ("body", "custom_filters", "year", "value")),
        ({"tags": CustomFilter(operator="in", value=[])}, ("body", "custom_filters", "tags", "value")),
        ({"$file_id": CustomFilter(operator="eq", value="x")}, ("body", "custom_filters", "$file_id")),
    ],
)
def test_meaningless_filters_name_the_field(spec: dict[str, CustomFilter], loc: tuple[str, ...]) -> None:
    with pytest.raises(FilterError) as err:
        compile_custom_filters(spec)
    assert err.value.loc == loc


def test_static_file_filter_targets_the_file_id_field() -> None:
    nodes = compile_static_filters(StaticFilters(parsed_directory_file_id=StrFilter(operator="in", value=["f1", "f2"])))
    assert nodes == [Condition(FILE_ID_FIELD, Op.IN, ("f1", "f2"))]
    with pytest.raises(FilterError):
        compile_static_filters(StaticFilters(parsed_directory_file_id=StrFilter(operator="gt", value="f1")))


def test_unknown_operator_is_rejected_by_the_model() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as err:
        RetrieveRequest.model_validate(
            {"index_id": "i", "query": "q", "custom_filters": {"a": {"operator": "like", "value": "x"}}}
        )
    assert "custom_filters" in str(err.value)


def test_every_optional_field_accepts_null() -> None:
    body = {k: None for k in ("custom_filters", "full_text_pipeline_weight", "vector_pipeline_weight", "num_candidates",
                              "rerank", "score_threshold", "static_filters", "top_k")}
    req = RetrieveRequest.model_validate({"index_id": "i", "query": "q", **body, "unknown_field": 1})
    assert req.top_k is None and req.custom_filters is None
