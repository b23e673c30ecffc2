"""Compile the v2 ``custom_filters`` / ``static_filters`` and the legacy ``MetadataFilters`` tree
into the internal filter tree.

Pure functions; they never mutate their input. A filter that cannot mean anything (a range
operator on a string, a list for ``eq``) raises ``FilterError`` with the location of the
offending field, which the API turns into a 422.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from gateway.legacy_models import MetadataFilter, MetadataFilters
from gateway.models import CustomFilter, RangeBound, StaticFilters, StrFilter
from services.common.domain import (
    FILE_ID_FIELD,
    MAX_FILTER_CONDITIONS,
    MAX_FILTER_DEPTH,
    RANGE_OPS,
    And,
    Condition,
    FilterNode,
    Not,
    Op,
    Or,
    Scalar,
    condition_limit_error,
    is_number,
)

_LIST_OPS = frozenset({Op.IN, Op.NIN, Op.ANY, Op.ALL})
_TEXT_OPS = frozenset({Op.TEXT_MATCH, Op.TEXT_MATCH_INSENSITIVE})
_LEGACY_OPS = {
    "==": Op.EQ, "!=": Op.NE, ">": Op.GT, "<": Op.LT, ">=": Op.GTE, "<=": Op.LTE, "in": Op.IN, "nin": Op.NIN,
    "any": Op.ANY, "all": Op.ALL, "contains": Op.CONTAINS, "text_match": Op.TEXT_MATCH,
    "text_match_insensitive": Op.TEXT_MATCH_INSENSITIVE, "is_empty": Op.IS_EMPTY,
}


class FilterError(ValueError):
    def __init__(self, loc: Sequence[str | int], msg: str) -> None:
        super().__init__(msg)
        self.loc = tuple(loc)
        self.msg = msg


def _condition(field: str, op: Op, value: object, loc: tuple[str | int, ...]) -> Condition:
    if op is Op.IS_EMPTY:
        return Condition(field, op, ())
    if value is None or (isinstance(value, list) and any(v is None for v in value)):
        raise FilterError((*loc, "value"), f"operator {op.value} needs a value, not null")
    if op in _LIST_OPS:
        values = list(value) if isinstance(value, list) else [value]
        if not values:
            raise FilterError((*loc, "value"), f"operator {op.value} needs at least one value")
    else:
        if isinstance(value, list):
            raise FilterError((*loc, "value"), f"operator {op.value} takes a single value, not a list")
        values = [value]
    if op in RANGE_OPS and not all(is_number(v) for v in values):
        raise FilterError((*loc, "value"), f"operator {op.value} needs a number")
    if op in _TEXT_OPS and not all(isinstance(v, str) and v.strip() for v in values):
        raise FilterError((*loc, "value"), f"operator {op.value} needs a non-empty string")
    condition = Condition(field, op, tuple(_scalar(v) for v in values))
    problem = condition_limit_error(condition)
    if problem:
        raise FilterError((*loc, "value"), problem)
    return condition


def _scalar(value: object) -> Scalar:
    if isinstance(value, bool | str):
        return value
    if is_number(value):
        return float(value)  # type: ignore[arg-type]
    raise TypeError(f"not a scalar: {value!r}")


def compile_custom_filters(
    custom: Mapping[str, CustomFilter | list[RangeBound] | None] | None,
) -> list[FilterNode]:
    """One condition per field (or per range bound); the caller ANDs them."""
    if custom and len(custom) > MAX_FILTER_CONDITIONS:
        raise FilterError(("body", "custom_filters"), f"more than {MAX_FILTER_CONDITIONS} filter conditions")
    nodes: list[FilterNode] = []
    for field, spec in (custom or {}).items():
        loc: tuple[str | int, ...] = ("body", "custom_filters", field)
        _check_field(field, loc)
        if spec is None:
            continue
        if isinstance(spec, list):
            for i, bound in enumerate(spec):
                nodes.append(_condition(field, Op(bound.operator), bound.value, (*loc, i)))
        else:
            nodes.append(_condition(field, Op(spec.operator), spec.value, loc))
    return nodes


def compile_static_filters(static: StaticFilters | None) -> list[FilterNode]:
    if static is None or static.parsed_directory_file_id is None:
        return []
    spec: StrFilter = static.parsed_directory_file_id
    loc = ("body", "static_filters", "parsed_directory_file_id")
    op = Op(spec.operator)
    if op in RANGE_OPS:
        raise FilterError((*loc, "operator"), "file ids support eq, ne, in and nin")
    return [_condition(FILE_ID_FIELD, op, spec.value, loc)]


def _check_field(field: str, loc: tuple[str | int, ...]) -> None:
    if not field or field.startswith("$"):
        raise FilterError(loc, "metadata field names must be non-empty and not start with '$'")
    problem = condition_limit_error(Condition(field, Op.EQ))
    if problem:
        raise FilterError(loc, problem)


def compile_metadata_filters(
    tree: MetadataFilters | None, loc: tuple[str | int, ...] = ("body", "search_filters")
) -> FilterNode | None:
    """The legacy ``MetadataFilters`` tree: ``and`` (the default), ``or``, and ``not`` (none of
    the filters match, as in LlamaIndex); a filter without an operator means ``==``. Deeper than
    ``MAX_FILTER_DEPTH`` groups or more than ``MAX_FILTER_CONDITIONS`` conditions is refused
    (the location names the first group or condition past the bound)."""
    return _compile_tree(tree, loc, 1, [0]) if tree is not None else None


def _compile_tree(tree: MetadataFilters, loc: tuple[str | int, ...], depth: int, count: list[int]) -> FilterNode | None:
    if depth > MAX_FILTER_DEPTH:
        raise FilterError(loc, f"filters nest deeper than {MAX_FILTER_DEPTH} levels")
    children: list[FilterNode] = []
    for i, item in enumerate(tree.filters):
        item_loc = (*loc, "filters", i)
        if isinstance(item, MetadataFilters):
            child = _compile_tree(item, item_loc, depth + 1, count)
            if child is not None:
                children.append(child)
            continue
        assert isinstance(item, MetadataFilter)
        count[0] += 1
        if count[0] > MAX_FILTER_CONDITIONS:
            raise FilterError(item_loc, f"more than {MAX_FILTER_CONDITIONS} filter conditions")
        _check_field(item.key, (*item_loc, "key"))
        children.append(_condition(item.key, _LEGACY_OPS[item.operator or "=="], item.value, item_loc))
    if not children:
        return None
    if tree.condition == "not":
        return Not(children[0] if len(children) == 1 else Or(tuple(children)))
    if tree.condition == "or":
        return children[0] if len(children) == 1 else Or(tuple(children))
    return conjunction(children)


def conjunction(nodes: Sequence[FilterNode]) -> FilterNode | None:
    if not nodes:
        return None
    if len(nodes) == 1:
        return nodes[0]
    return And(tuple(nodes))
