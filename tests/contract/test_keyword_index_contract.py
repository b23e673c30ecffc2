"""The ``KeywordIndex`` contract: every adapter answers these scenarios identically.

Adapters are listed in ``ADAPTERS`` as factories ``(request, tmp_path) -> Backend``, where
``Backend.open()`` returns a new client over the same storage (so a reopen tests persistence)
and ``Backend.cleanup`` removes what the test left behind.

OpenSearch runs against a real node: the ``opensearch_url`` fixture (``tests/conftest.py``), which
is ``QUARRY_TEST_OPENSEARCH_URL`` or a node the session starts from ``tests/opensearch``; each
test works under its own index prefix, all of it deleted afterwards. Where the two engines truly
differ, the test says so and asserts each engine's own behaviour.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from services.common.domain import Chunk, Condition, FilterNode, Op, chunk_id
from services.sparse.adapters.opensearch import OpenSearchKeywordIndex
from services.sparse.adapters.opensearch_dsl import IndexLayout, template_name
from services.sparse.adapters.tantivy import TantivyKeywordIndex
from services.sparse.ports import KeywordIndex
from tests import servers
from tests.contract.filter_scenarios import CHUNKS, INDEX, LEGACY, REQUIRED

Opener = Callable[[], KeywordIndex]



@dataclass(frozen=True)
class Backend:
    open: Opener
    cleanup: Callable[[], Awaitable[None]] | None = None


def _tantivy(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    return Backend(lambda: TantivyKeywordIndex(tmp_path / "sparse", writer_heap_bytes=16 * 1024 * 1024, threads=2))


def _opensearch(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    url: str = request.getfixturevalue("opensearch_url")
    # A prefix per test: the fixed index ids of the scenarios never meet another run's indexes.
    layout = IndexLayout(prefix=f"qtest-{uuid.uuid4().hex[:12]}-", replicas=0, refresh_interval="100ms")

    def connect() -> OpenSearchKeywordIndex:
        return OpenSearchKeywordIndex.connect(
            url.split(","),
            username=servers.OPENSEARCH_USERNAME,
            password=servers.OPENSEARCH_PASSWORD,
            verify_certs=servers.OPENSEARCH_VERIFY_CERTS,
            timeout=30,
            layout=layout,
        )

    async def cleanup() -> None:
        index = connect()
        client = index._client
        try:
            found = await client.indices.get(index=f"{layout.prefix}*", expand_wildcards="all")
            for name in found:
                await client.indices.delete(index=name)
            await client.indices.delete_index_template(name=template_name(layout.prefix), ignore=404)
        finally:
            await index.close()

    return Backend(connect, cleanup)


ADAPTERS: dict[str, Callable[[pytest.FixtureRequest, Path], Backend]] = {"tantivy": _tantivy, "opensearch": _opensearch}


@pytest.fixture(params=sorted(ADAPTERS))
async def opener(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Opener]:
    backend = ADAPTERS[request.param](request, tmp_path)
    yield backend.open
    if backend.cleanup is not None:
        await backend.cleanup()


@pytest.fixture
async def kw(opener: Opener) -> AsyncIterator[KeywordIndex]:
    index = opener()
    yield index
    await index.close()


def _chunk(index_id: str, file_id: str, i: int, content: str, **meta: object) -> Chunk:
    return Chunk(
        id=chunk_id(file_id, 1, i),
        index_id=index_id,
        file_id=file_id,
        file_name=f"{file_id}.md",
        content=content,
        metadata=meta,  # type: ignore[arg-type]
        chunk_index=i,
        start_char=10 * i,
        end_char=10 * i + len(content),
        token_count=len(content.split()),
        page_start=i + 1,
        page_end=i + 2,
    )


CORPUS = [
    ("f-rust", "Tantivy is a full-text search engine library written in Rust, inspired by Lucene."),
    ("f-rust", "The Rust compiler checks ownership and borrowing at compile time."),
    ("f-py", "Python is a programming language; pytest executes the tests of Python projects."),
    ("f-run", "She runs every morning before work, and the dog runs with her."),
    ("f-db", "PostgreSQL is a relational database with full-text search, JSON and extensions."),
]


def _corpus(index_id: str) -> list[Chunk]:
    return [_chunk(index_id, f, i, text) for i, (f, text) in enumerate(CORPUS)]


def _ids(hits: list) -> list[str]:  # type: ignore[type-arg]
    return [h.chunk.id for h in hits]


@pytest.fixture
async def corpus(kw: KeywordIndex) -> str:
    index_id = "corpus-" + uuid.uuid4().hex[:8]
    await kw.upsert(index_id, _corpus(index_id))
    return index_id


# -- writes -----------------------------------------------------------------------------------


async def test_upsert_same_id_twice_keeps_one_copy_and_replaces_it(kw: KeywordIndex) -> None:
    first = _chunk("idem", "f", 0, "original wording about granite", year=2020)
    await kw.upsert("idem", [first])
    await kw.upsert("idem", [first])
    assert await kw.count("idem") == 1

    changed = _chunk("idem", "f", 0, "replacement wording about marble", year=2021)
    await kw.upsert("idem", [changed, changed])
    assert await kw.count("idem") == 1
    assert await kw.search("idem", "granite", 10, None) == []
    hits = await kw.search("idem", "marble", 10, None)
    assert [h.chunk for h in hits] == [changed]


async def test_search_returns_the_full_chunk(kw: KeywordIndex) -> None:
    chunk = _chunk(
        "full", "file-9", 3, "quarry stone blocks", title="Stones", tags=["a", "b"], n=1.5, ok=True
    )
    await kw.upsert("full", [chunk])
    (hit,) = await kw.search("full", "stone", 5, None)
    assert hit.chunk == chunk
    assert hit.score > 0


# -- ranking and analysis ---------------------------------------------------------------------


async def test_bm25_ranks_the_best_matching_chunk_first(kw: KeywordIndex, corpus: str) -> None:
    chunks = _corpus(corpus)
    hits = await kw.search(corpus, "rust search engine library", 5, None)
    assert _ids(hits)[0] == chunks[0].id
    assert chunks[1].id in _ids(hits)  # mentions Rust only: matched, ranked lower
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)

    hits = await kw.search(corpus, "python tests", 5, None)
    assert _ids(hits) == [chunks[2].id]


async def test_stemming_matches_other_word_forms(kw: KeywordIndex, corpus: str) -> None:
    runs = _corpus(corpus)[3].id
    assert _ids(await kw.search(corpus, "running", 5, None)) == [runs]
    assert _ids(await kw.search(corpus, "RUN", 5, None)) == [runs]
    assert _ids(await kw.search(corpus, "databases", 5, None)) == [_corpus(corpus)[4].id]


async def test_stop_words_are_not_searched(kw: KeywordIndex, corpus: str) -> None:
    assert await kw.search(corpus, "the and with is a", 5, None) == []
    with_stop = await kw.search(corpus, "the ownership of the compiler", 5, None)
    without = await kw.search(corpus, "ownership compiler", 5, None)
    assert [(h.chunk.id, h.score) for h in with_stop] == [(h.chunk.id, h.score) for h in without]
    assert _ids(without) == [_corpus(corpus)[1].id]


async def test_ascii_folding_matches_accented_and_plain_spellings(kw: KeywordIndex) -> None:
    cafe = _chunk("fold", "f", 0, "Café crème in the old Ærøskøbing harbour")
    resume = _chunk("fold", "f", 1, "A naïve résumé for the Zürich office")
    await kw.upsert("fold", [cafe, resume])
    for query, expected in [("cafe", cafe), ("CAFÉ", cafe), ("aeroskobing", cafe), ("Ærøskøbing", cafe),
                            ("resume", resume), ("naive", resume), ("zurich", resume), ("Zürich", resume)]:
        assert _ids(await kw.search("fold", query, 5, None)) == [expected.id], query


# A token is kept while it is under 40 bytes in tantivy and under 40 characters in OpenSearch
# (its length filter counts characters); the limits agree on ASCII words.
LONG_OK = "a" + "b" * 38  # 39 characters
LONG_DROPPED = "c" * 40


async def test_tokens_of_40_characters_or_more_are_not_indexed(kw: KeywordIndex) -> None:
    chunk = _chunk("long", "f", 0, f"marker {LONG_OK} {LONG_DROPPED}")
    await kw.upsert("long", [chunk])
    assert _ids(await kw.search("long", LONG_OK, 5, None)) == [chunk.id]
    assert await kw.search("long", LONG_DROPPED, 5, None) == []
    assert await kw.search("long", LONG_DROPPED + " " + "d" * 300, 5, None) == []
    assert _ids(await kw.search("long", "marker", 5, None)) == [chunk.id]


async def test_engines_differ_on_long_non_ascii_tokens(opener: Opener, request: pytest.FixtureRequest) -> None:
    """A true difference, documented: tantivy's limit is in UTF-8 bytes, OpenSearch's in characters.

    25 x "é" is 25 characters but 50 bytes: indexed by OpenSearch, dropped by tantivy. Such words
    are rare in alphabetic scripts but common in CJK text, which the simple tokenizer keeps as one
    run: a run of 14 or more ideographs (3 bytes each) is searchable in OpenSearch only.
    """
    word = "é" * 25
    kw = opener()
    try:
        chunk = _chunk("wide", "f", 0, f"marker {word}")
        await kw.upsert("wide", [chunk])
        found = _ids(await kw.search("wide", word, 5, None))
        assert found == ([] if request.node.callspec.params["opener"] == "tantivy" else [chunk.id])
    finally:
        await kw.close()


async def test_engines_stem_a_few_words_differently(opener: Opener, request: pytest.FixtureRequest) -> None:
    """A true difference, documented: both use Snowball English, but tantivy's (rust-stemmers) has
    older rules for some suffixes. "university" stems to ``universiti`` in tantivy and to ``univers``
    in Lucene's porter2, where it meets "universal"; inflections of one word agree in both."""
    kw = opener()
    try:
        university = _chunk("stem", "f", 0, "The university library")
        await kw.upsert("stem", [university])
        assert _ids(await kw.search("stem", "universities", 5, None)) == [university.id]
        universal = _ids(await kw.search("stem", "universal", 5, None))
        assert universal == ([] if request.node.callspec.params["opener"] == "tantivy" else [university.id])
    finally:
        await kw.close()


@pytest.mark.parametrize(
    "text",
    [
        'AND OR ( " :',
        ")(][}{^~*?\\/+-!&&||",
        'content:rust AND "unterminated',
        "title:foo OR",
        "rust) AND (search",
        "",
        "   ",
        "\x00\u200b💥",
    ],
)
async def test_query_syntax_characters_never_raise(kw: KeywordIndex, corpus: str, text: str) -> None:
    hits = await kw.search(corpus, text, 5, None)
    assert all(h.chunk.index_id == corpus for h in hits)
    if "rust" in text:
        assert _corpus(corpus)[0].id in _ids(hits)


async def test_top_k_cuts_the_ranking(kw: KeywordIndex, corpus: str) -> None:
    every = await kw.search(corpus, "rust python runs database search", 10, None)
    assert len(every) == 5
    assert _ids(await kw.search(corpus, "rust python runs database search", 2, None)) == _ids(every)[:2]
    assert len(await kw.search(corpus, "rust python runs database search", 1, None)) == 1


async def test_missing_index_is_empty_not_an_error(kw: KeywordIndex) -> None:
    assert await kw.search("never-created", "anything", 10, None) == []
    assert await kw.count("never-created") == 0
    assert await kw.delete_file("never-created", "f") == 0
    await kw.drop("never-created")


async def test_indexes_are_isolated_and_any_id_is_safe(kw: KeywordIndex) -> None:
    odd = "../Projekt ü/idx:1"
    await kw.upsert(odd, [_chunk(odd, "f", 0, "shared word alpha")])
    await kw.upsert("plain", [_chunk("plain", "f", 0, "shared word beta")])
    assert [h.chunk.content for h in await kw.search(odd, "shared", 5, None)] == ["shared word alpha"]
    assert [h.chunk.content for h in await kw.search("plain", "shared", 5, None)] == ["shared word beta"]


# -- filters ----------------------------------------------------------------------------------


@pytest.fixture
async def filtered(kw: KeywordIndex) -> KeywordIndex:
    await kw.upsert(INDEX, CHUNKS)
    return kw


# Unlike the dense suite, no adapter here refuses a legacy operator, so one test runs both lists.
@pytest.mark.parametrize(("name", "node", "expected"), REQUIRED + LEGACY, ids=[s[0] for s in REQUIRED + LEGACY])
async def test_filter_scenarios(
    filtered: KeywordIndex, name: str, node: FilterNode, expected: set[str]
) -> None:
    hits = await filtered.search(INDEX, "quarry", 100, node)
    assert {h.chunk.id for h in hits} == expected


async def test_filters_on_field_names_with_query_syntax(kw: KeywordIndex) -> None:
    odd = ["a.b", "x:y", 'weird "name" [1 TO 2]', "ü"]
    chunks = [
        _chunk("odd", "f", 0, "quarry one", **{odd[0]: "x", odd[1]: 3, odd[2]: "(?s).*", odd[3]: True}),
        _chunk("odd", "f", 1, "quarry two", **{odd[0]: "y", odd[1]: 1, odd[2]: "plain", "a": "x"}),
    ]
    await kw.upsert("odd", chunks)
    first, second = chunks[0].id, chunks[1].id

    async def found(node: FilterNode) -> list[str]:
        return sorted(_ids(await kw.search("odd", "quarry", 10, node)))

    assert await found(Condition(odd[0], Op.EQ, ("x",))) == [first]
    assert await found(Condition(odd[1], Op.GTE, (2,))) == [first]
    assert await found(Condition(odd[1], Op.LT, (2,))) == [second]
    assert await found(Condition(odd[2], Op.CONTAINS, ("(?s)",))) == [first]
    assert await found(Condition(odd[3], Op.EQ, (True,))) == [first]
    assert await found(Condition(odd[3], Op.IS_EMPTY)) == [second]


async def test_filter_does_not_change_bm25_scores(filtered: KeywordIndex) -> None:
    plain = {h.chunk.id: h.score for h in await filtered.search(INDEX, "retrieval search", 100, None)}
    node = Condition("author", Op.IN, ("Ada", "Brian", "Chen"))
    some = {h.chunk.id: h.score for h in await filtered.search(INDEX, "retrieval search", 100, node)}
    assert len(some) == 3
    assert some == {cid: plain[cid] for cid in some}


async def test_filter_narrows_before_top_k(filtered: KeywordIndex) -> None:
    node = Condition("author", Op.EQ, ("Eve",))
    hits = await filtered.search(INDEX, "quarry", 1, node)
    assert [h.chunk.metadata["author"] for h in hits] == ["Eve"]


# -- deletes, counts, persistence -------------------------------------------------------------


async def test_delete_file_removes_only_that_file(kw: KeywordIndex, corpus: str) -> None:
    assert await kw.count(corpus) == 5
    assert await kw.count(corpus, "f-rust") == 2
    assert await kw.delete_file(corpus, "f-rust") == 2
    assert await kw.count(corpus, "f-rust") == 0
    assert await kw.count(corpus) == 3
    assert await kw.search(corpus, "rust", 5, None) == []
    assert await kw.delete_file(corpus, "f-rust") == 0
    assert len(await kw.search(corpus, "python", 5, None)) == 1


async def test_drop_removes_the_index_and_it_can_be_recreated(kw: KeywordIndex, corpus: str) -> None:
    await kw.drop(corpus)
    assert await kw.count(corpus) == 0
    assert await kw.search(corpus, "rust", 5, None) == []
    await kw.upsert(corpus, _corpus(corpus)[:1])
    assert await kw.count(corpus) == 1


async def test_data_survives_a_reopen(opener: Opener) -> None:
    first = opener()
    chunks = _corpus("durable")
    await first.upsert("durable", chunks)
    before = await first.search("durable", "rust search", 5, Condition("$file_id", Op.EQ, ("f-rust",)))
    await first.close()

    second = opener()
    try:
        assert await second.count("durable") == 5
        after = await second.search("durable", "rust search", 5, Condition("$file_id", Op.EQ, ("f-rust",)))
        assert [(h.chunk, h.score) for h in after] == [(h.chunk, h.score) for h in before]
        assert {h.chunk.id for h in after} == {chunks[0].id, chunks[1].id}
        await second.upsert("durable", chunks[:1])  # the reopened index is writable, ids still unique
        assert await second.count("durable") == 5
    finally:
        await second.close()


async def test_ready(kw: KeywordIndex) -> None:
    assert await kw.ready() is True


async def test_concurrent_writes_and_reads_are_serialised_safely(kw: KeywordIndex) -> None:
    batches = [
        [_chunk("busy", f"file-{b}", i, f"concurrent granite batch {b} item {i}") for i in range(5)]
        for b in range(8)
    ]
    results = await asyncio.gather(
        *(kw.upsert("busy", batch) for batch in batches),
        *(kw.search("busy", "granite", 50, None) for _ in range(8)),
        kw.upsert("busy", batches[0]),
    )
    assert all(isinstance(r, list) for r in results[8:16])
    assert await kw.count("busy") == 40
    assert len(await kw.search("busy", "granite", 100, None)) == 40
    assert await asyncio.gather(*(kw.delete_file("busy", f"file-{b}") for b in range(4))) == [5, 5, 5, 5]
    assert await kw.count("busy") == 20


# -- the engines against each other --------------------------------------------------------------

_WORDS = ("granite basalt quarry marble harbour lantern meadow cobalt willow ember quartz saddle thistle "
          "orbit falcon velvet canyon pepper lagoon cedar river stone tower signal winter").split()


def _congruence_corpus(index_id: str) -> list[Chunk]:
    rng = random.Random(7)
    return [
        _chunk(index_id, f"f-{i % 9}", i, " ".join(rng.choice(_WORDS) for _ in range(rng.randint(5, 60))))
        for i in range(120)
    ]


async def test_both_engines_rank_and_score_bm25_identically(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Same chunks, same queries: the same order and the same scores (to float precision).

    OpenSearch's default similarity is Lucene's *legacy* BM25 (k1 1.2, b 0.75, with the ``k1 + 1``
    factor), which is tantivy's formula, and both quantize document lengths to one byte the same
    way. Scores part only where an analyzer differs (the stemming and long-token tests above) or
    where deleted documents still count in one engine's statistics and not the other's.
    """
    tantivy = _tantivy(request, tmp_path).open()
    os_backend = _opensearch(request, tmp_path)
    opensearch = os_backend.open()
    chunks = _congruence_corpus("congruent")
    try:
        await asyncio.gather(tantivy.upsert("congruent", chunks), opensearch.upsert("congruent", chunks))
        rng = random.Random(3)
        for _ in range(25):
            query = " ".join(rng.sample(_WORDS, rng.randint(1, 4)))
            a, b = await asyncio.gather(tantivy.search("congruent", query, 10, None),
                                        opensearch.search("congruent", query, 10, None))
            assert [h.chunk.id for h in a] == [h.chunk.id for h in b], query
            assert [h.score for h in a] == pytest.approx([h.score for h in b], rel=1e-5), query
    finally:
        await tantivy.close()
        await opensearch.close()
        assert os_backend.cleanup is not None
        await os_backend.cleanup()
