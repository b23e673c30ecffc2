"""The legacy pipeline retrieve: every retrieval mode, page screenshot nodes, filter inference.

Modes (all run on the same legs, fusion and reranker as the v2 retrieve):

- ``chunks``: the v2 retrieve, shaped as LlamaIndex nodes.
- ``files_via_content``: rank chunks, keep each file's best chunk score, return the top
  ``files_top_k`` files' whole parsed text.
- ``files_via_metadata``: hybrid search over the index's file cards (one chunk per file holding
  its name and metadata as text, written by the ingest worker into ``files_index_id(index)``),
  then the top files' whole text.
- ``auto_routed``: rules, no LLM (``route``): a query that names a file of the index goes to
  ``files_via_metadata``; one that asks for a summary or an overview goes to
  ``files_via_content``; anything else to ``chunks``. The choice and the rule that made it are
  reported in the response metadata.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gateway import legacy_models as lm
from gateway.backends import Backends, Budget
from gateway.filters import conjunction
from gateway.retrieval import Outcome, Plan, Result, retrieve
from services._proto.quarry.files.v1 import files_pb2
from services.common.domain import Chunk, Condition, FilterNode, Op, files_index_id

#: Candidates ranked per file in ``files_via_content`` (files are ranked by their best chunk).
FILE_RANKING_DEPTH = 50
_SUMMARY = re.compile(
    r"\b(summar(y|ies|ise|ize|ised|ized|ising|izing)|overview|tl;?dr|gist|outline|"
    r"main (points|ideas)|key (points|takeaways|findings)|"
    r"what (is|are) (this|these|that|the) (document|file|paper|report|text)s? about)\b",
    re.IGNORECASE,
)
_WORD = re.compile(r"\w+")
_SEPARATORS = re.compile(r"[\s_\-./\\]+")


# ---- filter inference ---------------------------------------------------------------------


def _words(text: str) -> list[str]:
    return _WORD.findall(text.casefold())


def _contains_words(haystack: Sequence[str], needle: Sequence[str]) -> bool:
    n = len(needle)
    return n > 0 and any(list(haystack[i : i + n]) == list(needle) for i in range(len(haystack) - n + 1))


def _enum_values(prop: Mapping[str, Any], defs: Mapping[str, Any]) -> list[Any]:
    """The allowed values of a JSON-schema property: ``enum``/``const``, through ``$ref`` and
    ``anyOf``/``oneOf``/``allOf`` (pydantic's shapes for enums and optionals)."""
    ref = prop.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        target = defs.get(ref.removeprefix("#/$defs/"))
        return _enum_values(target, defs) if isinstance(target, Mapping) else []
    values: list[Any] = []
    if isinstance(prop.get("enum"), list):
        values.extend(prop["enum"])
    if "const" in prop:
        values.append(prop["const"])
    for key in ("anyOf", "oneOf", "allOf"):
        for sub in prop.get(key) or []:
            if isinstance(sub, Mapping):
                values.extend(_enum_values(sub, defs))
    return values


Inferred = tuple[FilterNode | None, lm.MetadataFilters | None, str]
FilesOutcome = tuple[list["FileResult"], Outcome]


def infer_filters(schema: Mapping[str, Any] | None, query: str) -> Inferred:
    """Filters the query states without an LLM: a schema property whose allowed values
    (``enum``/``const``) occur in the query as whole words becomes ``key == value`` (``in`` for
    several). Free-form properties would need a language model, which Quarry does not call.

    Returns the internal filter, its ``MetadataFilters`` form for the response, and a note.
    """
    if not schema:
        return None, None, ""
    props = schema.get("properties")
    if not isinstance(props, Mapping):
        return None, None, "not inferred: the schema has no properties"
    defs = schema.get("$defs") or schema.get("definitions") or {}
    query_words = _words(query)
    nodes: list[FilterNode] = []
    shown: list[lm.MetadataFilter | lm.MetadataFilters] = []
    for key, prop in props.items():
        if not isinstance(prop, Mapping) or not key or key.startswith("$"):
            continue
        found = []
        for value in _enum_values(prop, defs):
            if isinstance(value, bool) or not isinstance(value, str | int | float):
                continue
            if _contains_words(query_words, _words(str(value))) and value not in found:
                found.append(value)
        if not found:
            continue
        scalars = tuple(v if isinstance(v, str) else float(v) for v in found)
        if len(found) == 1:
            nodes.append(Condition(key, Op.EQ, scalars))
            shown.append(lm.MetadataFilter(key=key, value=found[0], operator="=="))
        else:
            nodes.append(Condition(key, Op.IN, scalars))
            shown.append(lm.MetadataFilter(key=key, value=list(found), operator="in"))
    if not nodes:
        return None, None, (
            "not inferred: no allowed value (enum/const) of the schema occurs in the query; free-form "
            "fields need a language model, which Quarry does not call"
        )
    return conjunction(nodes), lm.MetadataFilters(filters=shown, condition="and"), "inferred"


# ---- routing ------------------------------------------------------------------------------


def _name_forms(file_name: str) -> set[str]:
    """How a query may spell a file name: whole, without its extension, separators as spaces."""
    name = file_name.casefold().strip()
    stem = name.rsplit(".", 1)[0] if "." in name else name
    forms = {name, stem, _SEPARATORS.sub(" ", name).strip(), _SEPARATORS.sub(" ", stem).strip()}
    return {f for f in forms if len(f) >= 3}


def names_file(query: str, file_name: str) -> bool:
    q = query.casefold()
    spaced = " " + _SEPARATORS.sub(" ", q) + " "
    return any(form in q or f" {form} " in spaced for form in _name_forms(file_name))


async def route(backends: Backends, plan: Plan, budget: Budget) -> tuple[str, str]:
    """Choose a mode for ``auto_routed``; returns (mode, the rule that chose it)."""
    cards = dataclasses.replace(
        plan, index_id=files_index_id(plan.index_id), top_k=5, num_candidates=5,
        dense_weight=0.0, sparse_weight=1.0, rerank=False, dense_cutoff=None,
    )
    candidates = await backends.sparse_search(
        cards.index_id, cards.query, cards.top_k, cards.filter, budget.remaining()
    )
    for hit in candidates.hits:
        if hit.chunk.file_name and names_file(plan.query, hit.chunk.file_name):
            return "files_via_metadata", f"the query names the file {hit.chunk.file_name!r}"
    if _SUMMARY.search(plan.query):
        return "files_via_content", "the query asks for a summary or an overview"
    return "chunks", "the query names no file and asks for no summary"


# ---- modes --------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileResult:
    """One file chosen by a files_* mode: its representative chunk (metadata, name, source) and score."""

    chunk: Chunk
    score: float


def result_score(r: Result) -> float:
    return r.rerank_score if r.rerank_score is not None else r.fused.score


def best_per_file(results: Iterable[Result]) -> list[FileResult]:
    """Files in order of their best chunk (results arrive best first)."""
    seen: dict[str, FileResult] = {}
    for r in results:
        fid = r.fused.chunk.file_id
        if fid not in seen:
            seen[fid] = FileResult(r.fused.chunk, result_score(r))
    return list(seen.values())


async def files_via_content(backends: Backends, plan: Plan, files_top_k: int, budget: Budget) -> FilesOutcome:
    wide = dataclasses.replace(plan, top_k=max(plan.top_k, FILE_RANKING_DEPTH), rerank_top_n=None)
    outcome = await retrieve(backends, wide, budget)
    return best_per_file(outcome.results)[:files_top_k], outcome


async def files_via_metadata(backends: Backends, plan: Plan, files_top_k: int, budget: Budget) -> FilesOutcome:
    cards = dataclasses.replace(
        plan, index_id=files_index_id(plan.index_id), top_k=files_top_k, rerank_top_n=None, dense_cutoff=None
    )
    outcome = await retrieve(backends, cards, budget)
    return best_per_file(outcome.results)[:files_top_k], outcome


async def read_whole(backends: Backends, project_id: str, index_id: str, files: Sequence[FileResult],
                     max_chars: int, timeout: float) -> list[str]:
    responses = await asyncio.gather(*(
        backends.files.ReadFile(
            files_pb2.ReadFileRequest(project_id=project_id, index_id=index_id, file_id=f.chunk.file_id,
                                      offset=0, max_length=max_chars, has_max_length=True),
            timeout=timeout,
        )
        for f in files
    ))
    return [r.content for r in responses]


# ---- shaping -------------------------------------------------------------------------------


def _source(chunk: Chunk) -> dict[str, lm.RelatedNode]:
    """Relationship "1" (SOURCE) names the document the node came from: LlamaIndex's ref_doc_id."""
    return {"1": lm.RelatedNode(
        node_id=chunk.source_id or chunk.file_id, node_type="4",
        metadata={"file_id": chunk.file_id, "file_name": chunk.file_name},
    )}


def chunk_node(r: Result) -> lm.NodeWithScore:
    c = r.fused.chunk
    return lm.NodeWithScore(
        node=lm.TextNode(
            id_=c.id, text=c.content, extra_info=dict(c.metadata), relationships=_source(c),
            start_char_idx=c.start_char, end_char_idx=c.end_char, mimetype="text/plain",
        ),
        score=result_score(r),
    )


def file_node(f: FileResult, text: str) -> lm.NodeWithScore:
    c = f.chunk
    return lm.NodeWithScore(
        node=lm.TextNode(
            id_=c.file_id, text=text, extra_info=dict(c.metadata), relationships=_source(c),
            start_char_idx=0, end_char_idx=len(text), mimetype="text/plain",
        ),
        score=f.score,
    )


@dataclass(frozen=True)
class WantedPage:
    """A page whose screenshot an image node may show (``page_index`` -1: every page of the file)."""

    parsed_file_id: str
    page_index: int
    score: float
    file_name: str
    #: The id the node names the file by: the upload's id for a file added to a pipeline (what its
    #: text nodes carry as ``file_id`` and LlamaIndex sends back), else the parsed file id.
    shown_id: str


def shown_file_id(chunk: Chunk) -> str:
    uploaded = chunk.metadata.get("file_id")
    return chunk.source_id if chunk.source_id and uploaded == chunk.source_id else chunk.file_id


def pages_of(chunks: Iterable[tuple[Chunk, float]], whole_files: bool) -> list[WantedPage]:
    """The pages the results touch, first occurrence wins; ``whole_files`` takes every page of each
    file (files_* modes)."""
    out: dict[tuple[str, int], WantedPage] = {}
    for chunk, score in chunks:
        pages = [0] if whole_files else range(chunk.page_start, max(chunk.page_start, chunk.page_end) + 1)
        for page in pages:
            if whole_files or page > 0:
                key = (chunk.file_id, page - 1)
                out.setdefault(key, WantedPage(chunk.file_id, page - 1, score, chunk.file_name, shown_file_id(chunk)))
    return list(out.values())


async def screenshot_nodes(backends: Backends, project_id: str, wanted: Sequence[WantedPage],
                           limit: int, timeout: float) -> list[lm.PageScreenshotNodeWithScore]:
    """Image nodes for the wanted pages that have a stored screenshot."""
    if not wanted:
        return []
    file_ids = list(dict.fromkeys(w.parsed_file_id for w in wanted))
    listing = await backends.files.ListPageImages(
        files_pb2.ListPageImagesRequest(project_id=project_id, file_ids=file_ids), timeout=timeout
    )
    by_file: dict[str, list[files_pb2.PageImage]] = {}
    for image in listing.items:
        by_file.setdefault(image.file_id, []).append(image)
    nodes: list[lm.PageScreenshotNodeWithScore] = []
    for w in wanted:
        for image in by_file.get(w.parsed_file_id, []):
            if w.page_index in (-1, image.page_index):
                nodes.append(lm.PageScreenshotNodeWithScore(
                    node=lm.PageScreenshotNode(
                        file_id=w.shown_id, image_size=image.size_bytes, page_index=image.page_index,
                        metadata={"file_name": w.file_name, "page_label": str(image.page_index + 1)},
                    ),
                    score=w.score,
                ))
    return nodes[:limit]


def index_config(index: files_pb2.Index) -> dict[str, Any]:
    try:
        config = json.loads(index.config_json or "{}")
    except json.JSONDecodeError:
        return {}
    return config if isinstance(config, dict) else {}


# ---- embedding_config and transform_config -------------------------------------------------

#: The one embedding model Quarry serves (the packaged all-MiniLM-L6-v2, int8 ONNX, 384 dimensions),
#: described with the llama-cloud variant that names a Hugging Face model: the managed-OpenAI variant
#: only allows ``openai-text-embedding-3-small``, and strict response validation refuses a type of
#: Quarry's own.
EMBEDDING_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
EMBEDDING_TYPE = "HUGGINGFACE_API_EMBEDDING"
EMBEDDING_CONFIG: dict[str, Any] = {"type": EMBEDDING_TYPE, "component": {"model_name": EMBEDDING_MODEL,
                                                                         "pooling": "mean"}}
#: Spellings of that model accepted in a request (compared case-insensitively).
EMBEDDING_MODEL_NAMES = frozenset({EMBEDDING_MODEL.casefold(), "all-minilm-l6-v2"})
#: What older Quarry versions reported (a client may send back what it read).
_OLD_EMBEDDING_TYPE = "QUARRY_EMBEDDING"
_SERVES = (f"Quarry serves one embedding model, {EMBEDDING_MODEL} (384 dimensions): leave embedding_config "
           f'out or send {{"type": "{EMBEDDING_TYPE}", "component": {{"model_name": "{EMBEDDING_MODEL}"}}}}')

#: Chunk sizes in tokens of the embedding model's tokenizer (services/ingest/chunking.py): the model
#: reads 256 tokens including [CLS] and [SEP]; the ingest worker's default is 200 (overlap 40).
MIN_CHUNK_TOKENS = 8
MAX_CHUNK_TOKENS = 254
DEFAULT_CHUNK_TOKENS = 200
#: transform_config chunking modes Quarry honours: both are token-counted here, and Quarry's chunker
#: ends a chunk at the strongest boundary near the limit (paragraph > sentence > line > word).
_TOKEN_MODES = ("token", "sentence")

Loc = tuple[str | int, ...]


class ConfigError(ValueError):
    """A pipeline setting Quarry cannot honour: a 422 naming ``loc``."""

    def __init__(self, loc: Loc, msg: str) -> None:
        super().__init__(msg)
        self.loc = loc
        self.msg = msg


def embedding_config(raw: Mapping[str, Any] | None) -> dict[str, Any]:
    """The pipeline's embedding config: Quarry's model, whichever accepted way the request named it.

    Accepted: nothing (null or ``{}``), the Hugging Face variant naming all-MiniLM-L6-v2 (or no
    model), and the type older Quarry versions reported. Anything else names a model Quarry cannot
    serve (``ConfigError``)."""
    loc: Loc = ("body", "embedding_config")
    if not raw:
        return EMBEDDING_CONFIG
    kind = raw.get("type")
    if kind == _OLD_EMBEDDING_TYPE:
        return EMBEDDING_CONFIG
    if kind != EMBEDDING_TYPE:
        raise ConfigError((*loc, "type"), f"embedding type {kind!r} cannot be served. {_SERVES}")
    component = raw.get("component")
    if component is None:
        return EMBEDDING_CONFIG
    if not isinstance(component, Mapping):
        raise ConfigError((*loc, "component"), f"component must be an object. {_SERVES}")
    name = component.get("model_name")
    if name is not None and (not isinstance(name, str) or name.strip().casefold() not in EMBEDDING_MODEL_NAMES):
        raise ConfigError((*loc, "component", "model_name"), f"model {name!r} cannot be served. {_SERVES}")
    return EMBEDDING_CONFIG


def _tokens(section: Mapping[str, Any], key: str, loc: Loc) -> int | None:
    value = section.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError((*loc, key), f"{key} must be an integer number of tokens")
    return value


def _sizes(section: Mapping[str, Any], loc: Loc) -> dict[str, int]:
    """``chunk_size`` / ``chunk_overlap`` of one section, checked against what the model reads."""
    size = _tokens(section, "chunk_size", loc)
    overlap = _tokens(section, "chunk_overlap", loc)
    if size is not None and not MIN_CHUNK_TOKENS <= size <= MAX_CHUNK_TOKENS:
        raise ConfigError((*loc, "chunk_size"), (
            f"chunk_size must be {MIN_CHUNK_TOKENS}..{MAX_CHUNK_TOKENS} tokens: Quarry's embedding model "
            f"({EMBEDDING_MODEL}) reads 256 tokens of its own tokenizer, [CLS] and [SEP] included "
            f"(default {DEFAULT_CHUNK_TOKENS})"
        ))
    if overlap is not None:
        limit = (size or DEFAULT_CHUNK_TOKENS) // 2
        if not 0 <= overlap < limit:
            raise ConfigError((*loc, "chunk_overlap"), (
                f"chunk_overlap must be >= 0 and below half of chunk_size ({size or DEFAULT_CHUNK_TOKENS}"
                f"{'' if size else ', the default'}): at most {limit - 1}"
            ))
    chunking = {"chunk_size": size, "chunk_overlap": overlap}
    return {k: v for k, v in chunking.items() if v is not None}


def chunking(raw: Mapping[str, Any] | None) -> dict[str, int]:
    """The chunking a ``transform_config`` asks for, as the index config stores it for the ingest
    worker (``{"chunk_size"?, "chunk_overlap"?}`` in tokens; ``{}``: the worker's defaults).

    ``auto`` mode (or no mode) takes ``chunk_size`` / ``chunk_overlap``; ``advanced`` mode takes
    them from a ``token`` or ``sentence`` ``chunking_config``, without segmentation (or with
    ``none``). What Quarry cannot do is a ``ConfigError``, not ignored."""
    loc: Loc = ("body", "transform_config")
    if not raw:
        return {}
    mode = raw.get("mode")
    if mode is None:
        mode = "advanced" if raw.get("chunking_config") or raw.get("segmentation_config") else "auto"
    if mode == "auto":
        return _sizes(raw, loc)
    if mode != "advanced":
        raise ConfigError((*loc, "mode"), f"mode must be 'auto' or 'advanced', not {mode!r}")
    segmentation = raw.get("segmentation_config")
    if segmentation is not None:
        if not isinstance(segmentation, Mapping):
            raise ConfigError((*loc, "segmentation_config"), "segmentation_config must be an object")
        if segmentation.get("mode") not in (None, "none"):
            raise ConfigError((*loc, "segmentation_config", "mode"), (
                f"segmentation mode {segmentation.get('mode')!r} is not supported: Quarry chunks a file's "
                "whole text (chunks report their page range); use 'none'"
            ))
    config = raw.get("chunking_config")
    if config is None:
        return {}
    cloc: Loc = (*loc, "chunking_config")
    if not isinstance(config, Mapping):
        raise ConfigError(cloc, "chunking_config must be an object")
    chunk_mode = config.get("mode")
    if chunk_mode is not None and chunk_mode not in _TOKEN_MODES:
        raise ConfigError((*cloc, "mode"), (
            f"chunking mode {chunk_mode!r} is not supported: Quarry chunks by tokens of its embedding model "
            f"(mode 'token' or 'sentence', chunk_size {MIN_CHUNK_TOKENS}..{MAX_CHUNK_TOKENS})"
        ))
    return _sizes(config, cloc)
