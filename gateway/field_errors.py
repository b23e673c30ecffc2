"""Pydantic's validation errors as one error per bad field, for both surfaces.

Where a field is a union (a custom filter is one condition *or* a list of range bounds; a filter
tree node is a condition *or* a group; a value is a number, a string, a bool or a list), pydantic
reports every member's failure and puts the member's name into ``loc``
(``custom_filters.year.list[RangeBound].1.value.float``). A caller needs the field and the reason:

- a union of models keeps the member that got furthest (the deepest error: the shape the caller
  meant), so a bad value deep in a group is not drowned by "key: field required" of the other
  member;
- a union of plain types (``float``, ``list[float]``...) is one error at the field itself;
- member names leave ``loc``, and one error is kept per location.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pydantic import BaseModel

from gateway import legacy_models, models

_GENERIC = re.compile(r"^[\w-]+\[.*\]$")
_PLAIN = frozenset({"float", "int", "str", "bool", "none", "bytes", "function-after", "function-before"})


def _model_names() -> frozenset[str]:
    names = set()
    for module in (models, legacy_models):
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, BaseModel):
                names.add(value.__name__)
    return frozenset(names)


_MODELS = _model_names()


_WORD = re.compile(r"\w+")


def _is_model(part: object) -> bool:
    """A member that is a model, or a container of one (``list[RangeBound]``)."""
    if not isinstance(part, str):
        return False
    return part in _MODELS or (bool(_GENERIC.match(part)) and not _MODELS.isdisjoint(_WORD.findall(part)))


def _is_plain(part: object) -> bool:
    return isinstance(part, str) and (part in _PLAIN or bool(_GENERIC.match(part))) and not _is_model(part)


def _first_tag(loc: Sequence[Any], start: int) -> int | None:
    for i in range(start, len(loc)):
        if _is_model(loc[i]) or _is_plain(loc[i]):
            return i
    return None


def field_errors(errors: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """``[{"loc", "msg", "type"}]``, one per bad field, union members resolved (see the module)."""
    pending = [(tuple(e["loc"]), e) for e in errors]
    done: list[tuple[tuple[Any, ...], Mapping[str, Any]]] = []
    while pending:
        loc, error = pending.pop(0)
        tag = _first_tag(loc, 0)
        if tag is None:
            done.append((loc, error))
            continue
        if _is_plain(loc[tag]):
            pending.insert(0, (loc[:tag], error))
            continue
        prefix = loc[:tag]
        rivals = [(lc, e) for lc, e in pending if lc[:tag] == prefix and len(lc) > tag and _is_model(lc[tag])]
        pending = [(lc, e) for lc, e in pending if (lc, e) not in rivals]
        group = [(loc, error), *rivals]
        depth: dict[str, int] = {}
        for lc, _ in group:
            depth[lc[tag]] = max(depth.get(lc[tag], 0), len(lc))
        best = max(depth, key=lambda member: depth[member])  # ties: the first member reported
        pending[:0] = [((*lc[:tag], *lc[tag + 1:]), e) for lc, e in group if lc[tag] == best]
    out: dict[tuple[Any, ...], dict[str, Any]] = {}
    for loc, error in done:
        out.setdefault(loc, {"loc": list(loc), "msg": error["msg"], "type": error["type"]})
    return list(out.values())
