"""Filter scenarios every engine adapter must answer identically (dense and sparse suites).

Each chunk's content contains the word "quarry", so a keyword search for "quarry" and a
vector search with a large top_k both see the whole corpus; the filter alone decides which
ids come back.
"""

from __future__ import annotations

from services.common.domain import FILE_ID_FIELD, And, Chunk, Condition, FilterNode, Not, Op, Or, chunk_id

INDEX = "idx-filters"

_ROWS: list[tuple[str, str, dict[str, object]]] = [
    ("a", "file-1", {"year": 2021, "author": "Ada", "tags": ["ml", "search"], "score": 0.5, "draft": False,
                     "title": "Ranking with Learned Sparse Models"}),
    ("b", "file-1", {"year": 2022, "author": "Brian", "tags": ["search"], "score": 1.5, "draft": True,
                     "title": "quarry ops handbook"}),
    ("c", "file-2", {"year": 2023, "author": "Chen", "tags": ["db"], "score": 2.5, "draft": False,
                     "title": "Vector Databases in Practice"}),
    ("d", "file-2", {"year": 2023.5, "author": "ada", "tags": [], "score": -1, "title": ""}),
    ("e", "file-3", {"author": "Eve", "title": "Search Engines"}),
]


def _content(key: str) -> str:
    return f"quarry document {key} about retrieval and search number {key}"


CHUNKS: list[Chunk] = [
    Chunk(
        id=chunk_id(file_id, 1, i),
        index_id=INDEX,
        file_id=file_id,
        file_name=f"{file_id}.txt",
        content=_content(key),
        metadata=meta,  # type: ignore[arg-type]
        chunk_index=i,
        start_char=i * 100,
        end_char=i * 100 + len(_content(key)),
        token_count=10,
        page_start=1,
        page_end=1,
    )
    for i, (key, file_id, meta) in enumerate(_ROWS)
]
ID = {key: CHUNKS[i].id for i, (key, _, _) in enumerate(_ROWS)}


def ids(*keys: str) -> set[str]:
    return {ID[k] for k in keys}


def c(field: str, op: Op, *values: object) -> Condition:
    return Condition(field, op, tuple(values))  # type: ignore[arg-type]


# (name, filter, expected keys). Required for every adapter: eq..nin, and/or/not, $file_id.
REQUIRED: list[tuple[str, FilterNode, set[str]]] = [
    ("eq-number", c("year", Op.EQ, 2023), ids("c")),
    ("eq-number-float-vs-int", c("year", Op.EQ, 2022.0), ids("b")),
    ("eq-string", c("author", Op.EQ, "Ada"), ids("a")),
    ("eq-bool", c("draft", Op.EQ, True), ids("b")),
    ("eq-list-element", c("tags", Op.EQ, "search"), ids("a", "b")),
    ("ne-string", c("author", Op.NE, "Ada"), ids("b", "c", "d", "e")),
    ("ne-missing-field-matches", c("year", Op.NE, 2021), ids("b", "c", "d", "e")),
    ("gt", c("year", Op.GT, 2022), ids("c", "d")),
    ("gte", c("year", Op.GTE, 2022), ids("b", "c", "d")),
    ("lt", c("score", Op.LT, 1.5), ids("a", "d")),
    ("lte", c("score", Op.LTE, 1.5), ids("a", "b", "d")),
    ("range-and", And((c("year", Op.GTE, 2022), c("year", Op.LT, 2023.5))), ids("b", "c")),
    ("in-strings", c("author", Op.IN, "Ada", "Eve"), ids("a", "e")),
    ("in-numbers", c("year", Op.IN, 2021, 2023), ids("a", "c")),
    ("in-list-field", c("tags", Op.IN, "db", "ml"), ids("a", "c")),
    ("nin", c("author", Op.NIN, "Ada", "Eve"), ids("b", "c", "d")),
    ("nin-missing-field-matches", c("year", Op.NIN, 2021, 2022), ids("c", "d", "e")),
    ("or", Or((c("author", Op.EQ, "Eve"), c("year", Op.EQ, 2021))), ids("a", "e")),
    ("not", Not(c("tags", Op.EQ, "search")), ids("c", "d", "e")),
    ("nested", And((Or((c("year", Op.GTE, 2023), c("draft", Op.EQ, True))), Not(c("author", Op.EQ, "ada")))),
     ids("b", "c")),
    ("file-id", c(FILE_ID_FIELD, Op.EQ, "file-2"), ids("c", "d")),
    ("file-id-in", c(FILE_ID_FIELD, Op.IN, "file-1", "file-3"), ids("a", "b", "e")),
    ("no-match", c("author", Op.EQ, "Nobody"), set()),
]

# The legacy operators (issue 3). Adapters implement them as documented on Condition.
LEGACY: list[tuple[str, FilterNode, set[str]]] = [
    ("any", c("tags", Op.ANY, "db", "ml"), ids("a", "c")),
    ("all", c("tags", Op.ALL, "ml", "search"), ids("a")),
    ("contains-list", c("tags", Op.CONTAINS, "search"), ids("a", "b")),
    ("contains-substring", c("title", Op.CONTAINS, "Vector Data"), ids("c")),
    ("text-match", c("title", Op.TEXT_MATCH, "Search"), ids("e")),
    ("text-match-keeps-case", c("title", Op.TEXT_MATCH, "search"), set()),
    ("text-match-insensitive", c("title", Op.TEXT_MATCH_INSENSITIVE, "ENGINES"), ids("e")),
    ("is-empty", c("tags", Op.IS_EMPTY), ids("d", "e")),
    ("is-empty-string", c("title", Op.IS_EMPTY), ids("d")),
]
