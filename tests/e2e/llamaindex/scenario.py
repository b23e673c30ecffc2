"""A LlamaIndex user's program pointed at Quarry: LlamaCloudIndex / LlamaCloudRetriever, unchanged.

Runs inside its own virtualenv (``llama-index-indices-managed-llama-cloud==0.12.0`` pins
``llama-cloud<2``, which cannot share Quarry's), so it imports neither Quarry nor pytest.
``tests/e2e/test_llamaindex_legacy.py`` builds that venv, starts the stack and runs this file.

Every check compares a result with what the corpus below implies. Failed checks are collected,
all printed at the end, and the exit code is 1; on success one ``SCENARIO_SUMMARY {json}`` line
is printed. ``SCENARIO_STATE {json}`` (the pipeline ids) is printed as soon as they exist, so the
pytest side can compare the v2 retrieval API with the legacy one on the same pipeline.

Usage: python scenario.py --base-url URL --api-key KEY --fixtures DIR
(or LLAMA_CLOUD_BASE_URL / LLAMA_CLOUD_API_KEY). DIR holds ``manifest.json`` and the files it lists.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import itertools
import json
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import httpx
from llama_cloud import APIStatusError, LlamaCloud
from llama_index.core import Document
from llama_index.core.schema import ImageNode, NodeWithScore, TextNode
from llama_index.core.vector_stores.types import FilterCondition, FilterOperator, MetadataFilter, MetadataFilters
from llama_index.indices.managed.llama_cloud import LlamaCloudIndex, LlamaCloudRetriever
from pydantic import BaseModel, Field

DOCS_PIPELINE = "li-e2e-docs"
FILES_PIPELINE = "li-e2e-files"
SMALL_CHUNKS_PIPELINE = "li-e2e-small-chunks"
PROJECT = "Default"
#: Per-request deadline of every client (seconds) and per-step deadline of this program.
TIMEOUT = 30
STEP_TIMEOUT = 120
#: Larger than the corpus's chunk count: a filtered query then returns every matching chunk.
ALL = 50
GENERIC_QUERY = "notes"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class Doc:
    text: str
    metadata: dict[str, Any]


LIGHTHOUSE = "\n\n".join(
    f"Entry {i}. The keeper of the northern lighthouse wrote in the log that night {i} brought a storm "
    f"from the west; waves broke over the gallery, the lamp was trimmed twice, and the supply boat "
    f"Marten {i} waited in the harbour until the wind turned and the fog bell fell silent."
    for i in range(1, 31)
)

# Metadata is laid out so that each filter operator selects a known, distinct set of documents:
# reviewer is missing on two documents and "" on one (is_empty, !=, nin), tags is [] on one.
DOCS: dict[str, Doc] = {
    "guides/solar": Doc(
        "Photovoltaic solar panels convert sunlight directly into electricity. Silicon cells release "
        "electrons when photons strike them, and an inverter turns the direct current into alternating "
        "current for the household grid.",
        {"year": 2019, "author": "Ada", "tags": ["energy", "science"], "title": "Solar Power Basics",
         "reviewer": "Zoe", "rating": 4.5},
    ),
    "guides/volcano": Doc(
        "Volcanoes form where magma from the mantle reaches the surface. Eruptions release ash, lava "
        "and gases; the 1991 eruption of Mount Pinatubo cooled the planet for two years.",
        {"year": 2020, "author": "Brian", "tags": ["geology", "science"], "title": "Volcano Eruptions Explained",
         "reviewer": "", "rating": 3.0},
    ),
    "baking": Doc(
        "Sourdough bread rises with a starter of wild yeast and lactic acid bacteria. Bakers feed the "
        "starter with flour and water every day and bake the loaf in a very hot Dutch oven.",
        {"year": 2021, "author": "Chen", "tags": ["food"], "title": "Sourdough Bread At Home", "rating": 4.0},
    ),
    "code/rust": Doc(
        "The Rust programming language checks memory safety at compile time. Its borrow checker enforces "
        "that every value has exactly one owner and that references never outlive the value they point to.",
        {"year": 2022, "author": "Ada", "tags": ["software"], "title": "Rust Ownership Rules",
         "reviewer": "Yuri", "rating": 5.0},
    ),
    "chess": Doc(
        "Beginners learn chess openings by controlling the centre, developing knights before bishops and "
        "castling early to keep the king safe.",
        {"year": 2023, "author": "Dana", "tags": [], "title": "Chess Openings For Beginners", "rating": 2.5},
    ),
    "climate/glaciers": Doc(
        "Alpine glaciers are retreating as summers warm. Surveyors measure the glacier snout every autumn "
        "and photograph the moraine left behind by the melting ice.",
        {"year": 2024, "author": "Eve", "tags": ["geology", "climate", "science"], "title": "Glacier Retreat Survey",
         "reviewer": "Zoe", "rating": 3.5},
    ),
    "logs/lighthouse": Doc(
        LIGHTHOUSE,
        {"year": 2018, "author": "Eve", "tags": ["history"], "title": "Lighthouse Keeper Log",
         "reviewer": "Zoe", "rating": 1.5},
    ),
}
SOLAR, VOLCANO, BAKING, RUST, CHESS, GLACIERS, LIGHTHOUSE_ID = DOCS


def f(key: str, op: FilterOperator, value: Any) -> MetadataFilter:
    return MetadataFilter(key=key, operator=op, value=value)


Op = FilterOperator
# (what, filters, expected document ids). The retriever drops the top-level condition (always AND);
# nested MetadataFilters keep theirs.
FILTER_CASES: list[tuple[str, MetadataFilters, set[str]]] = [
    ("== author Ada", MetadataFilters(filters=[f("author", Op.EQ, "Ada")]), {SOLAR, RUST}),
    ("> year 2021", MetadataFilters(filters=[f("year", Op.GT, 2021)]), {RUST, CHESS, GLACIERS}),
    (">= year 2021", MetadataFilters(filters=[f("year", Op.GTE, 2021)]), {BAKING, RUST, CHESS, GLACIERS}),
    ("< year 2021", MetadataFilters(filters=[f("year", Op.LT, 2021)]), {LIGHTHOUSE_ID, SOLAR, VOLCANO}),
    ("<= year 2021", MetadataFilters(filters=[f("year", Op.LTE, 2021)]), {LIGHTHOUSE_ID, SOLAR, VOLCANO, BAKING}),
    ("> rating 3.9 (float)", MetadataFilters(filters=[f("rating", Op.GT, 3.9)]), {SOLAR, BAKING, RUST}),
    ("!= reviewer Zoe (missing field matches)", MetadataFilters(filters=[f("reviewer", Op.NE, "Zoe")]),
     {VOLCANO, BAKING, RUST, CHESS}),
    ("in author [Brian, Dana]", MetadataFilters(filters=[f("author", Op.IN, ["Brian", "Dana"])]), {VOLCANO, CHESS}),
    ("nin author [Brian, Dana]", MetadataFilters(filters=[f("author", Op.NIN, ["Brian", "Dana"])]),
     {LIGHTHOUSE_ID, SOLAR, BAKING, RUST, GLACIERS}),
    ("nin reviewer [Yuri, ''] (missing field matches)",
     MetadataFilters(filters=[f("reviewer", Op.NIN, ["Yuri", ""])]), {LIGHTHOUSE_ID, SOLAR, BAKING, CHESS, GLACIERS}),
    ("any tags [food, software]", MetadataFilters(filters=[f("tags", Op.ANY, ["food", "software"])]), {BAKING, RUST}),
    ("all tags [geology, science]", MetadataFilters(filters=[f("tags", Op.ALL, ["geology", "science"])]),
     {VOLCANO, GLACIERS}),
    ("contains tags science (list element)", MetadataFilters(filters=[f("tags", Op.CONTAINS, "science")]),
     {SOLAR, VOLCANO, GLACIERS}),
    ("contains title 'ough' (substring)", MetadataFilters(filters=[f("title", Op.CONTAINS, "ough")]), {BAKING}),
    ("text_match title Explained", MetadataFilters(filters=[f("title", Op.TEXT_MATCH, "Explained")]), {VOLCANO}),
    ("text_match title explained (case kept: none)",
     MetadataFilters(filters=[f("title", Op.TEXT_MATCH, "explained")]), set()),
    ("text_match_insensitive title 'keeper LOG'",
     MetadataFilters(filters=[f("title", Op.TEXT_MATCH_INSENSITIVE, "keeper LOG")]), {LIGHTHOUSE_ID}),
    ("is_empty reviewer (missing or '')", MetadataFilters(filters=[f("reviewer", Op.IS_EMPTY, None)]),
     {VOLCANO, BAKING, CHESS}),
    ("is_empty tags ([])", MetadataFilters(filters=[f("tags", Op.IS_EMPTY, None)]), {CHESS}),
    ("two filters are ANDed", MetadataFilters(filters=[f("author", Op.EQ, "Ada"), f("year", Op.GT, 2020)]), {RUST}),
    ("top-level OR is dropped by the client (AND)",
     MetadataFilters(filters=[f("author", Op.EQ, "Ada"), f("author", Op.EQ, "Brian")], condition=FilterCondition.OR),
     set()),
    ("science AND (Ada OR year >= 2024)", MetadataFilters(filters=[
        f("tags", Op.CONTAINS, "science"),
        MetadataFilters(filters=[f("author", Op.EQ, "Ada"), f("year", Op.GTE, 2024)], condition=FilterCondition.OR),
    ]), {SOLAR, GLACIERS}),
    ("NOT (Ada, geology): none of them", MetadataFilters(filters=[
        MetadataFilters(filters=[f("author", Op.EQ, "Ada"), f("tags", Op.CONTAINS, "geology")],
                        condition=FilterCondition.NOT),
    ]), {LIGHTHOUSE_ID, BAKING, CHESS}),
    ("(year < 2020 AND reviewer Zoe) OR food", MetadataFilters(filters=[
        MetadataFilters(filters=[
            MetadataFilters(filters=[f("year", Op.LT, 2020), f("reviewer", Op.EQ, "Zoe")],
                            condition=FilterCondition.AND),
            f("tags", Op.CONTAINS, "food"),
        ], condition=FilterCondition.OR),
    ]), {LIGHTHOUSE_ID, SOLAR, BAKING}),
]


class Author(StrEnum):
    ADA = "Ada"
    BRIAN = "Brian"
    CHEN = "Chen"
    DANA = "Dana"
    EVE = "Eve"


class ArticleFilters(BaseModel):
    """The schema a user hands to ``search_filters_inference_schema``."""

    author: Author = Field(description="Who wrote the article")


# ---- checking --------------------------------------------------------------------------------------


class NotRun(Exception):
    """A step needs something an earlier, failed step should have made."""


class StepTimeout(Exception):
    pass


@dataclass
class Report:
    failures: list[str] = field(default_factory=list)
    not_run: list[str] = field(default_factory=list)
    checks: int = 0
    step: str = ""

    def check(self, ok: bool, what: str, detail: str = "") -> bool:
        self.checks += 1
        if not ok:
            self.failures.append(f"[{self.step}] {what}" + (f"\n      {detail}" if detail else ""))
        return ok

    def equal(self, actual: Any, expected: Any, what: str) -> bool:
        return self.check(same(actual, expected), what, f"expected {show(expected)}, got {show(actual)}")

    def ids(self, nodes: Sequence[NodeWithScore], expected: set[str], what: str) -> bool:
        return self.equal(sorted(doc_ids(nodes)), sorted(expected), f"{what}: documents returned")

    def run(self, name: str, fn: Callable[[], None]) -> None:
        self.step = name
        signal.alarm(STEP_TIMEOUT)
        started = time.monotonic()
        try:
            fn()
        except NotRun as e:
            self.not_run.append(f"[{name}] not run: {e}")
        except Exception as e:
            self.checks += 1
            self.failures.append(f"[{name}] raised {describe(e)}")
        finally:
            signal.alarm(0)
            print(f"step {name}: {time.monotonic() - started:.1f}s", flush=True)


def _on_alarm(signum: int, frame: Any) -> None:
    raise StepTimeout(f"step did not finish within {STEP_TIMEOUT}s (a sync that never ends?)")


def same(a: Any, b: Any) -> bool:
    """Equal as JSON: 2019 and 2019.0, or True and 1, are different values here."""
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


def show(value: Any, limit: int = 600) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} chars)"


def describe(e: BaseException) -> str:
    """An HTTP error with its request and response body; anything else with where it happened."""
    if isinstance(e, APIStatusError):
        req = e.response.request
        try:
            body = req.content.decode("utf-8", "replace")
        except httpx.RequestNotRead:  # a streamed (multipart) upload
            body = "<streamed>"
        return (f"{type(e).__name__}: {req.method} {req.url} -> {e.status_code}\n      request body: {body[:800]}"
                f"\n      response body: {show(e.body, 1500)}")
    frames = traceback.extract_tb(e.__traceback__)
    here = [fr for fr in frames if fr.filename == __file__][-1:] + frames[-1:]
    where = " <- ".join(f"{Path(fr.filename).name}:{fr.lineno} {fr.name}" for fr in reversed(here))
    return f"{type(e).__name__}: {e}\n      at {where}"


def source_id(node: Any) -> str | None:
    src = node.source_node
    return src.node_id if src is not None else None


def text_nodes(nodes: Iterable[NodeWithScore]) -> list[NodeWithScore]:
    return [n for n in nodes if not isinstance(n.node, ImageNode)]


def image_nodes(nodes: Iterable[NodeWithScore]) -> list[NodeWithScore]:
    return [n for n in nodes if isinstance(n.node, ImageNode)]


def doc_ids(nodes: Iterable[NodeWithScore]) -> set[str]:
    return {source_id(n.node) or "<no SOURCE relationship>" for n in text_nodes(nodes)}


def squash(text: str) -> str:
    return " ".join(text.split())


# ---- the scenario ---------------------------------------------------------------------------------


@dataclass
class FileFixture:
    path: Path
    custom_metadata: dict[str, Any]
    text: str | None  # the exact parsed text, when it is known (plain text)
    lines: list[str]  # lines the parsed text contains (PDF: per page)
    pages: int


class Scenario:
    def __init__(self, base_url: str, api_key: str, fixtures: Path) -> None:
        self.base_url = base_url
        self.api_key = api_key
        self.r = Report()
        self.client = LlamaCloud(api_key=api_key, base_url=base_url, timeout=TIMEOUT, max_retries=0)
        manifest = json.loads((fixtures / "manifest.json").read_text())
        self.files = {
            name: FileFixture(fixtures / name, spec["custom_metadata"], spec.get("text"), spec["lines"],
                              spec.get("pages", 0))
            for name, spec in manifest["files"].items()
        }
        self.pdf_name = next(n for n, spec in self.files.items() if spec.pages > 1)
        self.txt_name = next(n for n, spec in self.files.items() if spec.text is not None)
        self.docs: LlamaCloudIndex | None = None
        self.files_index: LlamaCloudIndex | None = None
        self.file_ids: dict[str, str] = {}
        self.state: dict[str, Any] = {}

    # -- helpers --

    def need_docs(self) -> LlamaCloudIndex:
        if self.docs is None:
            raise NotRun(f"the {DOCS_PIPELINE!r} pipeline was not built")
        return self.docs

    def need_files(self) -> LlamaCloudIndex:
        if self.files_index is None or len(self.file_ids) != len(self.files):
            raise NotRun(f"the {FILES_PIPELINE!r} pipeline or its files were not built")
        return self.files_index

    def retrieve(self, index: LlamaCloudIndex, query: str, **kwargs: Any) -> list[NodeWithScore]:
        return index.as_retriever(**kwargs).retrieve(query)

    def raw(self, pipeline_id: str, query: str, **params: Any) -> tuple[Any, list[NodeWithScore]]:
        """The raw client's retrieve, its nodes converted the way the retriever converts them."""
        resp = self.client.pipelines.retrieve(pipeline_id, query=query, **params)
        nodes = []
        for rn in resp.retrieval_nodes:
            node = TextNode.model_validate(rn.node.model_dump(exclude_none=True))
            node.metadata.update(resp.metadata or {})
            nodes.append(NodeWithScore(node=node, score=rn.score))
        return resp, nodes

    def lexical(self, query: str) -> list[NodeWithScore]:
        """Sparse leg only (alpha=0), no reranking: exactly the chunks that contain the words."""
        return self.raw(self.need_docs().id, query, alpha=0.0, enable_reranking=False,
                        dense_similarity_top_k=ALL, sparse_similarity_top_k=ALL)[1]

    def status(self, pipeline_id: str) -> str:
        return self.client.pipelines.get_status(pipeline_id=pipeline_id).status

    def check_scores_descending(self, nodes: Sequence[NodeWithScore], what: str) -> None:
        scores = [n.score for n in text_nodes(nodes)]
        if self.r.check(all(s is not None for s in scores), f"{what}: every node has a score", show(scores)):
            self.r.check(scores == sorted(scores, reverse=True), f"{what}: scores descending", show(scores))

    def check_doc_nodes(self, nodes: Sequence[NodeWithScore], what: str, mode: str = "chunks",
                        docs: Mapping[str, Doc] = DOCS) -> None:
        """Every text node is a chunk of a known document: offsets, text, metadata, source."""
        seen: set[str] = set()
        for n in text_nodes(nodes):
            node = n.node
            ref = source_id(node)
            if not self.r.check(ref in docs, f"{what}: node's SOURCE relationship is a document id",
                                f"node {node.id_!r} has ref_doc_id {ref!r}"):
                continue
            doc = docs[ref]
            self.r.check(bool(node.id_) and node.id_ not in seen, f"{what}: node ids are unique and set",
                         f"{node.id_!r}")
            seen.add(node.id_)
            s, e = node.start_char_idx, node.end_char_idx
            self.r.check(s is not None and e is not None and doc.text[s:e] == node.text,
                         f"{what}: {ref} node text == document text[start_char_idx:end_char_idx]",
                         f"start={s} end={e} text={node.text[:80]!r}")
            wrong = {k: node.metadata.get(k, "<missing>") for k, v in doc.metadata.items()
                     if not same(node.metadata.get(k, "<missing>"), v)}
            self.r.check(not wrong, f"{what}: {ref} node metadata contains the document's metadata exactly",
                         f"differs: {show(wrong)}; expected {show(doc.metadata)}")
            self.r.equal(node.metadata.get("retrieval_mode"), mode, f"{what}: {ref} metadata.retrieval_mode")

    def check_file_nodes(self, nodes: Sequence[NodeWithScore], what: str) -> None:
        by_id = {fid: name for name, fid in self.file_ids.items()}
        for n in text_nodes(nodes):
            node = n.node
            ref = source_id(node)
            if not self.r.check(ref in by_id, f"{what}: node's ref_doc_id is an uploaded file id",
                                f"got {ref!r}, uploaded {show(self.file_ids)}"):
                continue
            name = by_id[ref]
            fx = self.files[name]
            expected = {**fx.custom_metadata, "file_name": name, "file_id": ref}
            wrong = {k: node.metadata.get(k, "<missing>") for k, v in expected.items()
                     if not same(node.metadata.get(k, "<missing>"), v)}
            self.r.check(not wrong, f"{what}: {name} node metadata ⊇ custom_metadata + file_name + file_id",
                         f"differs: {show(wrong)}; expected {show(expected)}")
            if fx.text is not None:
                s, e = node.start_char_idx, node.end_char_idx
                self.r.check(s is not None and e is not None and fx.text[s:e] == node.text,
                             f"{what}: {name} node text == file text[start_char_idx:end_char_idx]",
                             f"start={s} end={e} text={node.text[:80]!r}")

    # -- steps --

    def build_docs(self) -> None:
        projects = list(self.client.projects.list())
        self.r.check(any(p.name == PROJECT for p in projects), "a project named 'Default' exists",
                     show([p.name for p in projects]))
        documents = [Document(id_=doc_id, text=doc.text, metadata=doc.metadata) for doc_id, doc in DOCS.items()]
        index = LlamaCloudIndex.from_documents(documents, name=DOCS_PIPELINE, project_name=PROJECT,
                                               api_key=self.api_key, base_url=self.base_url, timeout=TIMEOUT,
                                               raise_on_error=True)
        self.docs = index
        self.state["docs_pipeline_id"] = index.id
        self.print_state()
        self.r.equal(index.project.name, PROJECT, "index.project.name")
        self.r.equal(index.pipeline.name, DOCS_PIPELINE, "index.pipeline.name")
        self.r.equal(self.status(index.id), "SUCCESS", "pipeline status after from_documents")
        # Upsert by name: the same pipeline again, and its documents stay.
        again = self.client.pipelines.upsert(project_id=index.project.id, name=DOCS_PIPELINE)
        self.r.equal(again.id, index.id, "PUT /pipelines with the same name returns the same pipeline")
        listed = [p.id for p in self.client.pipelines.list(project_id=index.project.id, pipeline_name=DOCS_PIPELINE)
                  if p.name == DOCS_PIPELINE]
        self.r.equal(listed, [index.id], "pipelines listed by name")
        by_name = LlamaCloudRetriever(name=DOCS_PIPELINE, project_name=PROJECT, api_key=self.api_key,
                                      base_url=self.base_url, timeout=TIMEOUT, dense_similarity_top_k=ALL,
                                      rerank_top_n=ALL)
        self.r.equal(by_name.pipeline.id, index.id, "LlamaCloudRetriever(name=...) resolves the pipeline")
        self.r.ids(by_name.retrieve(GENERIC_QUERY), set(DOCS), "after the upsert, every document")

    def build_files(self) -> None:
        project_id = next(p.id for p in self.client.projects.list() if p.name == PROJECT)
        created = self.client.pipelines.upsert(project_id=project_id, name=FILES_PIPELINE,
                                               llama_parse_parameters={"take_screenshot": True})
        index = LlamaCloudIndex(name=FILES_PIPELINE, project_name=PROJECT, api_key=self.api_key,
                                base_url=self.base_url, timeout=TIMEOUT)
        self.files_index = index
        self.state["files_pipeline_id"] = index.id
        self.print_state()
        self.r.equal(index.id, created.id, "LlamaCloudIndex(name=...) finds the upserted pipeline")
        params = index.pipeline.llama_parse_parameters
        self.r.equal(getattr(params, "take_screenshot", None), True,
                     "pipeline.llama_parse_parameters.take_screenshot echoed")
        for name, fx in self.files.items():
            self.file_ids[name] = index.upload_file(str(fx.path), custom_metadata=fx.custom_metadata,
                                                    raise_on_error=True)
        self.state["file_ids"] = self.file_ids
        self.print_state()
        self.r.equal(self.status(index.id), "SUCCESS", "pipeline status after upload_file")
        for name, fid in self.file_ids.items():
            status = self.client.pipelines.files.get_status(file_id=fid, pipeline_id=index.id).status
            self.r.equal(status, "SUCCESS", f"file status of {name}")

    def chunk_nodes(self) -> None:
        index = self.need_docs()
        nodes = self.retrieve(index, "how do photovoltaic solar panels turn sunlight into electricity",
                              similarity_top_k=ALL, rerank_top_n=ALL)
        self.r.check(bool(nodes) and source_id(nodes[0].node) == SOLAR, "best node is from the solar document",
                     show([source_id(n.node) for n in nodes[:3]]))
        self.r.ids(nodes, set(DOCS), "top_k above the corpus size")
        self.check_doc_nodes(nodes, "chunks")
        self.check_scores_descending(nodes, "chunks (reranked)")
        log = sorted((n.node for n in nodes if source_id(n.node) == LIGHTHOUSE_ID), key=lambda n: n.start_char_idx)
        if self.r.check(len(log) > 1, "the long document has several chunks", f"{len(log)} chunks"):
            spans = [(n.start_char_idx, n.end_char_idx) for n in log]
            self.r.check(spans[0][0] == 0 and spans[-1][1] == len(LIGHTHOUSE), "its chunks span the whole text",
                         show(spans))
            self.r.check(all(b[0] <= a[1] < b[1] for a, b in itertools.pairwise(spans)),
                         "consecutive chunks overlap or touch and move forward", show(spans))

    def counts(self) -> None:
        index = self.need_docs()
        query = "the lighthouse keeper's log of storms"
        self.r.equal(len(self.retrieve(index, query)), 10, "default count (dense_similarity_top_k defaults to 10)")
        self.r.equal(len(self.retrieve(index, query, similarity_top_k=3)), 3, "similarity_top_k=3")
        nodes = self.retrieve(index, query, similarity_top_k=8, enable_reranking=True, rerank_top_n=2)
        self.r.equal(len(nodes), 2, "top_k=8 with rerank_top_n=2")
        self.check_scores_descending(nodes, "rerank_top_n=2")
        _, nodes = self.raw(index.id, query, dense_similarity_top_k=5, enable_reranking=False, rerank_top_n=2)
        self.r.equal(len(nodes), 5, "enable_reranking=false: rerank_top_n does not limit, top_k=5 does")
        self.check_scores_descending(nodes, "enable_reranking=false (fused score)")
        self.check_doc_nodes(nodes, "raw client")

    def alpha(self) -> None:
        index = self.need_docs()
        nodes = self.lexical("Pinatubo")
        self.r.ids(nodes, {VOLCANO}, "alpha=0 (sparse only), 'Pinatubo'")
        _, nodes = self.raw(index.id, "Pinatubo", alpha=1.0, enable_reranking=False, dense_similarity_top_k=5)
        self.r.equal(len(nodes), 5, "alpha=1 (dense only): top_k nodes whatever the words")
        nodes = self.retrieve(index, "Pinatubo", alpha=1.0, similarity_top_k=5)
        self.r.equal(len(nodes), 5, "retriever alpha=1.0: top_k nodes")
        nodes = self.retrieve(index, "Pinatubo", alpha=0.0001, similarity_top_k=3)
        self.r.check(bool(nodes) and source_id(nodes[0].node) == VOLCANO, "retriever alpha=0.0001: volcano first",
                     show([source_id(n.node) for n in nodes]))

    def filters(self) -> None:
        index = self.need_docs()
        for what, filters, expected in FILTER_CASES:
            nodes = self.retrieve(index, GENERIC_QUERY, similarity_top_k=ALL, rerank_top_n=ALL, filters=filters)
            self.r.ids(nodes, expected, f"filter {what}")
            self.check_doc_nodes(nodes, f"filter {what}")
        # The raw client keeps a top-level condition; the server must honour it.
        _, nodes = self.raw(index.id, GENERIC_QUERY, dense_similarity_top_k=ALL, rerank_top_n=ALL, search_filters={
            "filters": [{"key": "author", "value": "Ada", "operator": "=="},
                        {"key": "author", "value": "Brian", "operator": "=="}],
            "condition": "or",
        })
        self.r.ids(nodes, {SOLAR, RUST, VOLCANO}, "raw client, top-level condition or")
        # A missing operator means == (API_CONTRACT.md §3).
        _, nodes = self.raw(index.id, GENERIC_QUERY, dense_similarity_top_k=ALL, rerank_top_n=ALL,
                            search_filters={"filters": [{"key": "author", "value": "Dana"}]})
        self.r.ids(nodes, {CHESS}, "raw client, filter without operator")

    def modes(self) -> None:
        index = self.need_docs()
        nodes = self.retrieve(index, "sourdough starter with wild yeast", retrieval_mode="files_via_content")
        self.r.ids(nodes, {BAKING}, "files_via_content, files_top_k default 1")
        self.check_whole(nodes, "files_via_content", "files_via_content")
        nodes = self.retrieve(index, "the lighthouse keeper wrote about storms", retrieval_mode="files_via_content",
                              files_top_k=2)
        self.r.equal(len(nodes), 2, "files_via_content, files_top_k=2: two nodes")
        self.r.check(len(doc_ids(nodes)) == len(nodes), "one node per document", show(sorted(doc_ids(nodes))))
        self.r.check(bool(nodes) and source_id(nodes[0].node) == LIGHTHOUSE_ID, "lighthouse log first",
                     show([source_id(n.node) for n in nodes]))
        self.check_whole(nodes, "files_via_content (multi-chunk document)", "files_via_content")
        # Yuri is the reviewer of the Rust note: only in its metadata, in no document's text.
        nodes = self.retrieve(index, "Yuri", retrieval_mode="files_via_metadata")
        self.r.ids(nodes, {RUST}, "files_via_metadata 'Yuri'")
        self.check_whole(nodes, "files_via_metadata", "files_via_metadata")
        for query, mode, expected in [
            ("summarize the sourdough bread notes", "files_via_content", BAKING),
            ("give an overview of volcano eruptions", "files_via_content", VOLCANO),
            ("how does the borrow checker enforce ownership", "chunks", RUST),
        ]:
            resp, _ = self.raw(index.id, query, retrieval_mode="auto_routed")
            meta = resp.metadata or {}
            self.r.equal(meta.get("retrieval_mode"), mode, f"auto_routed {query!r}: metadata.retrieval_mode")
            self.r.check(bool(meta.get("routing_reason")), f"auto_routed {query!r}: metadata.routing_reason set",
                         show(meta))
            nodes = self.retrieve(index, query, retrieval_mode="auto_routed")
            self.r.check(bool(nodes) and source_id(nodes[0].node) == expected, f"auto_routed {query!r}: best document",
                         show([source_id(n.node) for n in nodes]))
            if mode == "chunks":
                self.check_doc_nodes(nodes, f"auto_routed {query!r}", mode)
            else:
                self.r.equal(len(nodes), 1, f"auto_routed {query!r}: one file")
                self.check_whole(nodes, f"auto_routed {query!r}", mode)

    def check_whole(self, nodes: Sequence[NodeWithScore], what: str, mode: str) -> None:
        for n in text_nodes(nodes):
            ref = source_id(n.node)
            if self.r.check(ref in DOCS, f"{what}: SOURCE is a document", repr(ref)):
                self.r.equal(n.node.text, DOCS[ref].text, f"{what}: {ref} node text is the whole document")
                wrong = {k: n.node.metadata.get(k) for k, v in DOCS[ref].metadata.items()
                         if not same(n.node.metadata.get(k), v)}
                self.r.check(not wrong, f"{what}: {ref} metadata contains the document's", show(wrong))
            self.r.equal(n.node.metadata.get("retrieval_mode"), mode, f"{what}: metadata.retrieval_mode")

    def file_chunks(self) -> None:
        index = self.need_files()
        nodes = self.retrieve(index, "glacier meltwater survey and the harbour breakwater", similarity_top_k=ALL,
                              rerank_top_n=ALL)
        self.r.equal(sorted(doc_ids(nodes)), sorted(self.file_ids.values()), "every uploaded file is retrievable")
        self.check_file_nodes(nodes, "file chunks")
        self.r.equal(len(image_nodes(nodes)), 0, "no image nodes unless asked for")

    def file_modes(self) -> None:
        index = self.need_files()
        pdf, txt = self.file_ids[self.pdf_name], self.file_ids[self.txt_name]
        nodes = self.retrieve(index, self.pdf_name, retrieval_mode="files_via_metadata")
        self.r.ids(nodes, {pdf}, f"files_via_metadata {self.pdf_name!r}")
        self.check_file_nodes(nodes, "files_via_metadata")
        self.check_whole_file(nodes, "files_via_metadata")
        query = f"what does {self.pdf_name} say about meltwater"
        resp, _ = self.raw(index.id, query, retrieval_mode="auto_routed")
        meta = resp.metadata or {}
        self.r.equal(meta.get("retrieval_mode"), "files_via_metadata", f"auto_routed {query!r}")
        self.r.check(bool(meta.get("routing_reason")), f"auto_routed {query!r}: routing_reason set", show(meta))
        nodes = self.retrieve(index, query, retrieval_mode="auto_routed")
        self.r.ids(nodes, {pdf}, f"auto_routed {query!r}")
        self.check_whole_file(nodes, f"auto_routed {query!r}")
        nodes = self.retrieve(index, "summarize the harbour master's notes", retrieval_mode="auto_routed")
        self.r.ids(nodes, {txt}, "auto_routed summary of the harbour notes")
        self.check_whole_file(nodes, "auto_routed summary")
        for n in nodes:
            self.r.equal(n.node.metadata.get("retrieval_mode"), "files_via_content", "auto_routed summary: mode")

    def check_whole_file(self, nodes: Sequence[NodeWithScore], what: str) -> None:
        by_id = {fid: name for name, fid in self.file_ids.items()}
        for n in text_nodes(nodes):
            name = by_id.get(source_id(n.node) or "")
            if not self.r.check(name is not None, f"{what}: SOURCE is an uploaded file", repr(source_id(n.node))):
                continue
            fx = self.files[name]
            if fx.text is not None:
                self.r.equal(n.node.text, fx.text, f"{what}: {name} node text is the whole file")
            missing = [line for line in fx.lines if squash(line) not in squash(n.node.text)]
            self.r.check(not missing, f"{what}: {name} node text has every line of the file", show(missing))

    def screenshots(self) -> None:
        index = self.need_files()
        pdf = self.file_ids[self.pdf_name]
        query = "how far did the glacier retreat since the last survey"
        nodes = self.retrieve(index, query, similarity_top_k=ALL, rerank_top_n=ALL, retrieve_page_screenshot_nodes=True)
        self.check_images(nodes, pdf, "sync")
        # The sync client base64-encodes str(body) (API_CONTRACT.md §4.1): only the async path has real bytes.
        retriever = index.as_retriever(similarity_top_k=ALL, rerank_top_n=ALL, retrieve_page_screenshot_nodes=True)
        nodes = asyncio.run(retriever.aretrieve(query))
        self.check_images(nodes, pdf, "async")
        for n in image_nodes(nodes):
            data = base64.b64decode(n.node.image or "")
            self.r.check(data.startswith(PNG_MAGIC), f"async: page {n.node.metadata.get('page_index')} is a PNG",
                         repr(data[:16]))
        docs = self.need_docs()
        nodes = self.retrieve(docs, query, retrieve_page_screenshot_nodes=True)
        self.r.equal(len(image_nodes(nodes)), 0, "no screenshots on a pipeline without take_screenshot")

    def check_images(self, nodes: Sequence[NodeWithScore], pdf: str, what: str) -> None:
        pdf_chunks = [n for n in text_nodes(nodes) if source_id(n.node) == pdf]
        self.r.check(bool(pdf_chunks), f"{what}: the PDF's chunk is retrieved", show(sorted(doc_ids(nodes))))
        images = image_nodes(nodes)
        pages = sorted(n.node.metadata.get("page_index", -1) for n in images)
        # The PDF is short enough to be one chunk that spans all its pages.
        self.r.equal(pages, list(range(self.files[self.pdf_name].pages)), f"{what}: one image node per page (0-based)")
        self.r.equal(sorted({n.node.metadata.get("file_id") for n in images}), [pdf], f"{what}: image file_id")
        self.r.check(all(n.node.image for n in images), f"{what}: image nodes carry an image")

    def inference(self) -> None:
        index = self.need_docs()
        query = "what did Brian write about eruptions"
        schema = ArticleFilters.model_json_schema()
        resp, nodes = self.raw(index.id, query, dense_similarity_top_k=ALL, rerank_top_n=ALL,
                               search_filters_inference_schema=schema)
        inferred = resp.inferred_search_filters.model_dump() if resp.inferred_search_filters else {}
        got = [(x.get("key"), x.get("value"), x.get("operator")) for x in inferred.get("filters") or []]
        self.r.equal(got, [("author", "Brian", "==")], "inferred_search_filters for a query naming Brian")
        self.r.ids(nodes, {VOLCANO}, "results respect the inferred filter (raw)")
        retriever = index.as_retriever(similarity_top_k=ALL, rerank_top_n=ALL,
                                       search_filters_inference_schema=ArticleFilters)
        self.r.ids(retriever.retrieve(query), {VOLCANO}, "results respect the inferred filter (retriever)")
        query = "eruptions and lava"
        resp, nodes = self.raw(index.id, query, dense_similarity_top_k=ALL, rerank_top_n=ALL,
                               search_filters_inference_schema=schema)
        none = resp.inferred_search_filters is None or not resp.inferred_search_filters.filters
        self.r.check(none, "nothing inferred for a query naming no author", show(resp.inferred_search_filters))
        self.r.check(bool((resp.metadata or {}).get("search_filters_inference")),
                     "metadata.search_filters_inference says why", show(resp.metadata))
        self.r.ids(nodes, set(DOCS), "no inferred filter: every document")

    def ref_doc_info(self) -> None:
        info = self.need_docs().ref_doc_info
        self.r.equal(sorted(info), sorted(DOCS), "ref_doc_info lists the documents")
        for doc_id, doc in DOCS.items():
            if doc_id in info:
                self.r.equal(info[doc_id].metadata, doc.metadata, f"ref_doc_info[{doc_id!r}].metadata")

    def mutations(self) -> None:
        index = self.need_docs()
        comet = Document(id_="extra/comet", text="A comet is a ball of ice and dust; near the Sun it grows a tail "
                         "that always points away from it.", metadata={"year": 2025, "author": "Fay"})
        index.insert(comet)
        nodes = self.lexical("comet")
        self.r.ids(nodes, {"extra/comet"}, "insert: the new document is retrievable")
        docs = {**DOCS, comet.id_: Doc(comet.text, comet.metadata)}
        self.check_doc_nodes(nodes, "insert", docs=docs)
        self.r.equal(self.status(index.id), "SUCCESS", "status after insert")

        volcano = Doc("Krakatoa erupted in 1883 with a sound heard thousands of kilometres away.",
                      {**DOCS[VOLCANO].metadata, "year": 1883})
        index.update_ref_doc(Document(id_=VOLCANO, text=volcano.text, metadata=volcano.metadata))
        docs[VOLCANO] = volcano
        nodes = self.lexical("Krakatoa")
        self.r.ids(nodes, {VOLCANO}, "update_ref_doc: new text retrievable")
        self.check_doc_nodes(nodes, "update_ref_doc", docs=docs)
        self.r.ids(self.lexical("Pinatubo"), set(), "update_ref_doc: old text gone")

        chess = Doc("The Sicilian Defence answers the king's pawn with the c-pawn.", DOCS[CHESS].metadata)
        index.insert(Document(id_=CHESS, text=chess.text, metadata=chess.metadata))  # POST with a known id: upsert
        docs[CHESS] = chess
        nodes = self.lexical("Sicilian")
        self.r.ids(nodes, {CHESS}, "insert of an existing id replaces it")
        self.check_doc_nodes(nodes, "insert existing id", docs=docs)
        self.r.ids(self.lexical("castling"), set(), "insert of an existing id: old text gone")

        index.delete_ref_doc(RUST)
        del docs[RUST]
        self.r.ids(self.lexical("borrow checker"), set(), "delete_ref_doc('code/rust'): its nodes are gone")
        nodes = self.retrieve(index, GENERIC_QUERY, similarity_top_k=ALL, rerank_top_n=ALL,
                              filters=MetadataFilters(filters=[f("author", Op.EQ, "Ada")]))
        self.r.ids(nodes, {SOLAR}, "after delete, author == Ada")
        try:
            index.delete_ref_doc("no/such-doc", raise_if_not_found=True)
            self.r.check(False, "delete_ref_doc of an unknown id raises (404)", "it returned")
        except APIStatusError as e:
            self.r.equal(e.status_code, 404, "delete_ref_doc of an unknown id: status")
        info = index.ref_doc_info
        self.r.equal(sorted(info), sorted(docs), "ref_doc_info after insert/update/delete")
        if VOLCANO in info:
            self.r.equal(info[VOLCANO].metadata, volcano.metadata, "ref_doc_info metadata after update")
        self.r.equal(self.status(index.id), "SUCCESS", "status after delete")

    def pipeline_settings(self) -> None:
        """embedding_config / transform_config as the 1.x client sends them, and the pipeline read
        back through its strict response models."""
        strict = LlamaCloud(api_key=self.api_key, base_url=self.base_url, timeout=TIMEOUT, max_retries=0,
                            _strict_response_validation=True)
        got = strict.pipelines.get(self.need_docs().id)  # APIResponseValidationError on a wrong shape
        self.r.equal(got.embedding_config.type, "HUGGINGFACE_API_EMBEDDING", "strict get: embedding type")
        component = got.embedding_config.component
        self.r.equal(component.api_model_name if component else None, "sentence-transformers/all-MiniLM-L6-v2",
                     "strict get: Quarry's model")
        small = LlamaCloudIndex.from_documents(
            [Document(id_=LIGHTHOUSE_ID, text=LIGHTHOUSE, metadata={})], name=SMALL_CHUNKS_PIPELINE,
            project_name=PROJECT, api_key=self.api_key, base_url=self.base_url, timeout=TIMEOUT,
            transform_config={"mode": "auto", "chunk_size": 32, "chunk_overlap": 4},
            embedding_config={"type": "HUGGINGFACE_API_EMBEDDING",
                              "component": {"model_name": "sentence-transformers/all-MiniLM-L6-v2"}},
        )
        read = strict.pipelines.get(small.id)
        self.r.equal(read.transform_config.to_dict() if read.transform_config else None,
                     {"mode": "auto", "chunk_size": 32, "chunk_overlap": 4}, "strict get: transform_config")
        query = dict(alpha=0.0, enable_reranking=False, dense_similarity_top_k=ALL, sparse_similarity_top_k=ALL)
        few = self.raw(self.need_docs().id, "lighthouse keeper", **query)[1]
        many = self.raw(small.id, "lighthouse keeper", **query)[1]
        few = [n for n in few if n.node.ref_doc_id == LIGHTHOUSE_ID]
        longest = (max(len(n.node.get_content()) for n in nodes) if nodes else 0 for nodes in (many, few))
        small_chars, default_chars = longest
        # The query matches once per entry: every entry's chunk, the default's hold several entries.
        self.r.check(len(many) > len(few) > 0 and 3 * small_chars < default_chars,
                     "chunk_size 32: more, smaller chunks than the default",
                     f"{len(many)} chunks of at most {small_chars} characters vs {len(few)} of {default_chars}")
        try:
            LlamaCloudIndex.create_index(name="li-e2e-openai", project_name=PROJECT, api_key=self.api_key,
                                         base_url=self.base_url, timeout=TIMEOUT,
                                         embedding_config={"type": "OPENAI_EMBEDDING",
                                                           "component": {"model_name": "text-embedding-3-small"}})
            self.r.check(False, "an OpenAI embedding model is refused (422)", "it was accepted")
        except APIStatusError as e:
            self.r.equal(e.status_code, 422, "an OpenAI embedding model: status")
            detail = e.body.get("detail") if isinstance(e.body, dict) else None
            self.r.equal(detail[0]["loc"] if detail else None, ["body", "embedding_config", "type"],
                         "an OpenAI embedding model: the field named")

    def print_state(self) -> None:
        print("SCENARIO_STATE " + json.dumps(self.state), flush=True)

    def run(self) -> int:
        started = time.monotonic()
        for name, step in [
            ("build docs pipeline", self.build_docs),
            ("build files pipeline", self.build_files),
            ("chunk nodes", self.chunk_nodes),
            ("counts", self.counts),
            ("alpha", self.alpha),
            ("filters", self.filters),
            ("retrieval modes", self.modes),
            ("file chunks", self.file_chunks),
            ("file retrieval modes", self.file_modes),
            ("page screenshots", self.screenshots),
            ("filter inference", self.inference),
            ("ref_doc_info", self.ref_doc_info),
            ("insert/update/delete", self.mutations),
            ("pipeline settings", self.pipeline_settings),
        ]:
            self.r.run(name, step)
        for line in self.r.not_run:
            print(line)
        if self.r.failures:
            print(f"\n{len(self.r.failures)} of {self.r.checks} checks failed:")
            for failure in self.r.failures:
                print(f"  FAIL {failure}")
            return 1
        if self.r.not_run:
            return 1
        summary = {"checks": self.r.checks, "seconds": round(time.monotonic() - started, 1), **self.state}
        print("SCENARIO_SUMMARY " + json.dumps(summary), flush=True)
        return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--base-url", default=os.environ.get("LLAMA_CLOUD_BASE_URL"))
    parser.add_argument("--api-key", default=os.environ.get("LLAMA_CLOUD_API_KEY"))
    parser.add_argument("--fixtures", type=Path, required=True, help="folder with manifest.json and its files")
    args = parser.parse_args(argv)
    if not args.base_url or not args.api_key:
        parser.error("--base-url and --api-key (or LLAMA_CLOUD_BASE_URL / LLAMA_CLOUD_API_KEY) are required")
    signal.signal(signal.SIGALRM, _on_alarm)
    return Scenario(args.base_url, args.api_key, args.fixtures).run()


if __name__ == "__main__":
    sys.exit(main())
