"""Metadata as tantivy terms, and the internal filter tree as a tantivy query.

Tantivy's schema is fixed when an index is created, while chunk metadata keys are open-ended, so
metadata is flattened into two untokenized ("raw") text fields whose terms this module writes
and queries itself:

``m_kw`` (terms for equality, substring, token and emptiness tests), each term being
``hex(field name)`` + a kind letter + a payload:

- ``s<value>``: a scalar string value, exactly as given;
- ``l<value>``: a string element of a list value;
- ``b<true|false>``: a bool (a scalar or a list element);
- ``t<word>`` / ``i<word>``: each ``\\w+`` word of a scalar string, case kept / lowercased;
- ``p``: the field is present and not empty (not null, ``""`` or ``[]``).

``m_num`` (numbers): ``hex(field name)`` + ``n`` + 16 hex digits, an order-preserving encoding
of the value as an IEEE-754 double. Equal numbers encode equally whatever their JSON spelling
(2022 and 2022.0), and a numeric range is a lexicographic term range bounded within the field's
prefix, which the query parser builds from strings we format ourselves (only ``[0-9a-fn]``,
so nothing needs escaping and user text never reaches the parser).

Hex field names keep the kind letter unambiguous (it is the first character outside ``0-9a-f``)
and keep dots or any other character in a metadata key harmless. ``$file_id`` is encoded as a
scalar string field from the chunk's file id (a user metadata key of that name is ignored).

Why not a JSON field: in tantivy 0.27 ``Query.range_query`` does not accept JSON sub-paths and
the query parser's ranges over JSON columns that mix integers and floats can panic, while the
encoding above gives exact numeric semantics for every operator.

Nested objects, and lists inside lists, are stored with the chunk but are not filterable.
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Iterable, Mapping

import tantivy

from services.common.domain import FILE_ID_FIELD, And, Condition, FilterNode, Not, Op, Or, Scalar, is_number
from services.sparse.errors import InvalidFilter

KW_FIELD = "m_kw"
NUM_FIELD = "m_num"

_WORD = re.compile(r"\w+")
_NUM_MIN = "0" * 16  # below the encoding of -inf, so never a stored value
_NUM_MAX = "f" * 16  # above the encoding of +inf
_SINGLE = frozenset(
    {Op.EQ, Op.NE, Op.GT, Op.GTE, Op.LT, Op.LTE, Op.CONTAINS, Op.TEXT_MATCH, Op.TEXT_MATCH_INSENSITIVE}
)


def field_key(name: str) -> str:
    """The term prefix of a metadata field: its UTF-8 bytes in lowercase hex."""
    return name.encode().hex()


def sortable(value: float) -> str:
    """16 hex digits whose lexicographic order is the numeric order of ``value`` (not NaN)."""
    if value == 0.0:
        value = 0.0  # -0.0 == 0.0, so both must encode the same
    (bits,) = struct.unpack(">Q", struct.pack(">d", value))
    bits = bits ^ 0xFFFF_FFFF_FFFF_FFFF if bits >> 63 else bits | 1 << 63
    return f"{bits:016x}"


def words(text: str) -> list[str]:
    """The tokens TEXT_MATCH compares: runs of word characters, case kept."""
    return _WORD.findall(text)


def _bool(value: bool) -> str:
    return "true" if value else "false"


def _is_empty(value: object) -> bool:
    return value is None or value == "" or (isinstance(value, list | tuple | dict) and not value)


def metadata_terms(file_id: str, metadata: Mapping[str, object]) -> tuple[list[str], list[str]]:
    """The ``m_kw`` and ``m_num`` terms of one chunk (see the module docstring)."""
    kw: set[str] = set()
    num: set[str] = set()
    fields: list[tuple[str, object]] = [(k, v) for k, v in metadata.items() if k != FILE_ID_FIELD]
    fields.append((FILE_ID_FIELD, file_id))
    for name, value in fields:
        key = field_key(name)
        if not _is_empty(value):
            kw.add(key + "p")
        if isinstance(value, list | tuple):
            for element in value:
                _scalar_terms(key, element, kw, num, in_list=True)
        else:
            _scalar_terms(key, value, kw, num, in_list=False)
    return sorted(kw), sorted(num)


def _scalar_terms(key: str, value: object, kw: set[str], num: set[str], *, in_list: bool) -> None:
    if isinstance(value, bool):
        kw.add(key + "b" + _bool(value))
    elif is_number(value):
        number = float(value)  # type: ignore[arg-type]
        if not math.isnan(number):
            num.add(key + "n" + sortable(number))
    elif isinstance(value, str):
        if in_list:
            kw.add(key + "l" + value)
        else:
            kw.add(key + "s" + value)
            for word in words(value):
                kw.add(key + "t" + word)
                kw.add(key + "i" + word.lower())


def _regex_literal(text: str) -> str:
    # Every non-alphanumeric character as \x{..}: valid in tantivy's (Rust) regex syntax and
    # never special, whatever the user typed.
    return "".join(ch if ch.isalnum() else f"\\x{{{ord(ch):x}}}" for ch in text)


class FilterCompiler:
    """Turns a filter tree into one tantivy query over ``schema`` (no I/O, inputs never mutated).

    The queries only name fields, so one compiler serves every index built on the same schema;
    its empty in-memory index exists only to give the query parser the schema for ranges.
    """

    def __init__(self, schema: tantivy.Schema) -> None:
        self._schema = schema
        self._parser = tantivy.Index(schema)

    def compile(self, node: FilterNode) -> tantivy.Query:
        """The tantivy query matching exactly the chunks ``node`` selects."""
        if isinstance(node, Condition):
            return self._condition(node)
        if isinstance(node, And):
            if not node.children:
                return tantivy.Query.all_query()
            return tantivy.Query.boolean_query([(tantivy.Occur.Must, self.compile(c)) for c in node.children])
        if isinstance(node, Or):
            if not node.children:
                return tantivy.Query.empty_query()
            return tantivy.Query.boolean_query(
                [(tantivy.Occur.Should, self.compile(c)) for c in node.children]
            )
        if isinstance(node, Not):
            return self._not(self.compile(node.child))
        raise InvalidFilter(f"unknown filter node {type(node).__name__}")

    def _condition(self, cond: Condition) -> tantivy.Query:
        op, values = cond.op, cond.values
        if op in _SINGLE and len(values) != 1:
            raise InvalidFilter(f"operator {op.value} on {cond.field!r} takes exactly one value")
        key = field_key(cond.field)
        if op is Op.EQ:
            return self._eq(key, values[0])
        if op is Op.NE:
            return self._not(self._eq(key, values[0]))
        if op in (Op.IN, Op.ANY):
            return self._any(key, values)
        if op is Op.NIN:
            return self._not(self._any(key, values))
        if op is Op.ALL:
            if not values:
                return tantivy.Query.all_query()
            return tantivy.Query.boolean_query([(tantivy.Occur.Must, self._eq(key, v)) for v in values])
        if op in (Op.GT, Op.GTE, Op.LT, Op.LTE):
            return self._range(cond.field, key, op, values[0])
        if op is Op.CONTAINS:
            return self._contains(key, values[0])
        if op in (Op.TEXT_MATCH, Op.TEXT_MATCH_INSENSITIVE):
            return self._text_match(cond.field, key, values[0], insensitive=op is Op.TEXT_MATCH_INSENSITIVE)
        if op is Op.IS_EMPTY:
            return self._not(self._kw(key + "p"))
        raise InvalidFilter(f"unsupported operator {op}")

    def _kw(self, term: str) -> tantivy.Query:
        return tantivy.Query.term_query(self._schema, KW_FIELD, term, index_option="basic")

    def _num(self, term: str) -> tantivy.Query:
        return tantivy.Query.term_query(self._schema, NUM_FIELD, term, index_option="basic")

    @staticmethod
    def _not(query: tantivy.Query) -> tantivy.Query:
        # A boolean query made only of MUST_NOT clauses matches nothing in tantivy.
        return tantivy.Query.boolean_query(
            [(tantivy.Occur.Must, tantivy.Query.all_query()), (tantivy.Occur.MustNot, query)]
        )

    def _eq(self, key: str, value: Scalar) -> tantivy.Query:
        if isinstance(value, bool):
            return self._kw(key + "b" + _bool(value))
        if is_number(value):
            number = float(value)
            if math.isnan(number):
                raise InvalidFilter("NaN is not a filter value")
            return self._num(key + "n" + sortable(number))
        text = str(value)
        return tantivy.Query.boolean_query(
            [
                (tantivy.Occur.Should, self._kw(key + "s" + text)),
                (tantivy.Occur.Should, self._kw(key + "l" + text)),
            ]
        )

    def _any(self, key: str, values: Iterable[Scalar]) -> tantivy.Query:
        clauses = [(tantivy.Occur.Should, self._eq(key, v)) for v in values]
        return tantivy.Query.boolean_query(clauses) if clauses else tantivy.Query.empty_query()

    def _range(self, field: str, key: str, op: Op, value: Scalar) -> tantivy.Query:
        if not is_number(value) or math.isnan(float(value)):
            raise InvalidFilter(f"operator {op.value} on {field!r} needs a number, got {value!r}")
        bound = key + "n" + sortable(float(value))
        low, high = key + "n" + _NUM_MIN, key + "n" + _NUM_MAX
        text = {
            Op.GT: f"{NUM_FIELD}:{{{bound} TO {high}}}",
            Op.GTE: f"{NUM_FIELD}:[{bound} TO {high}]",
            Op.LT: f"{NUM_FIELD}:{{{low} TO {bound}}}",
            Op.LTE: f"{NUM_FIELD}:[{low} TO {bound}]",
        }[op]
        return self._parser.parse_query(text, [NUM_FIELD])

    def _contains(self, key: str, value: Scalar) -> tantivy.Query:
        if not isinstance(value, str):
            # A number or bool can only be "contained" as an element (or be the value itself).
            return self._eq(key, value)
        any_text = "(?s:.)*"
        try:
            substring = tantivy.Query.regex_query(
                self._schema, KW_FIELD, key + "s" + any_text + _regex_literal(value) + any_text
            )
        except ValueError as exc:  # the automaton's state limit (see domain.MAX_CONTAINS_BYTES)
            raise InvalidFilter(f"contains value too long for the keyword index: {exc}") from exc
        return tantivy.Query.boolean_query(
            [(tantivy.Occur.Should, substring), (tantivy.Occur.Should, self._kw(key + "l" + value))]
        )

    def _text_match(self, field: str, key: str, value: Scalar, *, insensitive: bool) -> tantivy.Query:
        if not isinstance(value, str):
            raise InvalidFilter(f"text_match on {field!r} needs a string, got {value!r}")
        tokens = words(value)
        if not tokens:
            return tantivy.Query.empty_query()
        kind = "i" if insensitive else "t"
        return tantivy.Query.boolean_query(
            [(tantivy.Occur.Must, self._kw(key + kind + (t.lower() if insensitive else t))) for t in tokens]
        )
