"""``TantivyKeywordIndex``: BM25 over chunk text in embedded tantivy, one index per Quarry index.

Layout: ``<data_dir>/<index dir>/`` is one tantivy index (segments on disk), opened on first use
and reopened after a restart. The directory is the index id itself when it is a plain name
(``[A-Za-z0-9][A-Za-z0-9_.-]*``, at most 128 characters) and ``~<sha256 of the id>`` otherwise,
so any id is safe on disk and the two forms never collide.

Schema:

- ``id`` / ``file_id``: raw (untokenized) terms, stored; upsert deletes by ``id``, delete_file
  and count by ``file_id``.
- ``content``: the English analyzer ``quarry_en`` (simple tokenizer, drop tokens over 40
  characters, lowercase, ASCII folding, English stop words, Snowball English stemmer), stored.
  BM25 runs over this field only.
- ``chunk``: stored bytes, the JSON of the remaining chunk attributes (file name, metadata,
  offsets, pages, token count), so a hit returns a full ``Chunk``.
- ``m_kw`` / ``m_num``: the metadata as filter terms; see ``tantivy_filters`` for the encoding
  and for why it is not a JSON field.

Queries: the user's text never meets tantivy's query parser. It is analyzed with the same
analyzer as the content, and each distinct token becomes a term query, combined as SHOULD
clauses (a repeated token is boosted by its count); text that analyzes to no tokens (only stop
words or punctuation) returns no hits. A filter is compiled to a tantivy query and added as a
MUST clause with a constant score of 0, so it restricts the matches inside the engine without
changing BM25 scores.

Threading: every tantivy call runs on this adapter's thread pool, never on the event loop. Each
index has one ``IndexWriter`` (created on the first write and kept), and a per-index lock that
serialises upserts, deletes and drops; the lock is taken inside the worker thread, so a caller
whose deadline expires does not release it early. A write commits once per call and then
reloads the reader, so the next search sees it.

Damage: an index whose files cannot be read (tantivy reports a corrupt or missing file when it
is opened or read) is recorded as damaged, logged once, and every call on it raises
``IndexDamaged`` (gRPC DATA_LOSS), which the gateway answers with the dense leg alone, flagged
``degraded``. ``ready`` opens every index once at start-up, so damage is reported before the
first query reaches it; ``damaged()`` lists them (the service's ``ListDamaged``). Dropping the
index, which a rebuild does first, clears the record.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import logging
import re
import shutil
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import tantivy

from services.common.domain import Chunk, FilterNode, Hit, chunk_from_stored, stored_fields
from services.sparse.adapters.tantivy_filters import KW_FIELD, NUM_FIELD, FilterCompiler, metadata_terms
from services.sparse.errors import IndexDamaged

log = logging.getLogger(__name__)

ANALYZER = "quarry_en"
_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_T = TypeVar("_T")


def english_analyzer() -> tantivy.TextAnalyzer:
    """Lowercase, ASCII-fold, drop English stop words, Snowball-stem: used to index and to query."""
    return (
        tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.simple())
        .filter(tantivy.Filter.remove_long(40))
        .filter(tantivy.Filter.lowercase())
        .filter(tantivy.Filter.ascii_fold())
        .filter(tantivy.Filter.stopword("english"))
        .filter(tantivy.Filter.stemmer("english"))
        .build()
    )


def build_schema() -> tantivy.Schema:
    """The schema of every sparse index (see the module docstring)."""
    builder = tantivy.SchemaBuilder()
    builder.add_text_field("id", stored=True, tokenizer_name="raw", index_option="basic")
    builder.add_text_field("file_id", stored=True, tokenizer_name="raw", index_option="basic")
    builder.add_text_field("content", stored=True, tokenizer_name=ANALYZER, index_option="position")
    builder.add_bytes_field("chunk", stored=True)
    builder.add_text_field(KW_FIELD, tokenizer_name="raw", index_option="basic")
    builder.add_text_field(NUM_FIELD, tokenizer_name="raw", index_option="basic")
    return builder.build()


#: What tantivy says when an index's files are corrupt or missing (it raises ValueError for
#: every failure, a bad query included).
_CORRUPTION = re.compile(r"corrupt|Failed to open file|IoError|FileDoesNotExist|magic|deserializ", re.IGNORECASE)


def index_dir_name(index_id: str) -> str:
    """The directory of ``index_id`` under the data dir (see the module docstring)."""
    if _PLAIN_NAME.fullmatch(index_id):
        return index_id
    return "~" + hashlib.sha256(index_id.encode()).hexdigest()


@dataclass(eq=False)
class _Handle:
    index: tantivy.Index
    path: Path
    lock: threading.Lock = field(default_factory=threading.Lock)
    writer: tantivy.IndexWriter | None = None
    dropped: bool = False


class TantivyKeywordIndex:
    """The ``KeywordIndex`` port on embedded tantivy (one directory per Quarry index)."""

    def __init__(
        self,
        data_dir: str | Path,
        *,
        writer_heap_bytes: int = 64 * 1024 * 1024,
        writer_threads: int = 1,
        threads: int = 4,
    ) -> None:
        self._dir = Path(data_dir)
        self._dir.mkdir(parents=True, exist_ok=True)
        self._heap = writer_heap_bytes
        self._writer_threads = writer_threads
        self._schema = build_schema()
        self._analyzer = english_analyzer()
        self._filters = FilterCompiler(self._schema)
        self._handles: dict[str, _Handle] = {}
        # Guards _handles and the existence of index directories (open, create, drop).
        self._registry = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="tantivy")
        self._closed = False
        #: Index id -> why it cannot be read; found on open, on a failing read, or by ``scan``.
        self._damaged: dict[str, str] = {}
        self._scanned = False

    async def _run(self, fn: Callable[..., _T], *args: object) -> _T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, functools.partial(fn, *args))

    # -- port ---------------------------------------------------------------------------------

    async def upsert(self, index_id: str, chunks: Sequence[Chunk]) -> None:
        """Write chunks in one commit; an existing id is replaced, never duplicated."""
        if chunks:
            await self._run(self._upsert, index_id, list(chunks))

    async def search(self, index_id: str, query: str, top_k: int, filter: FilterNode | None) -> list[Hit]:
        """BM25 top-k over content among the chunks matching ``filter`` (filtered in tantivy)."""
        if top_k <= 0:
            return []
        return await self._run(self._search, index_id, query, top_k, filter)

    async def delete_file(self, index_id: str, file_id: str) -> int:
        """Delete every chunk of ``file_id``; returns how many there were."""
        return await self._run(self._delete_file, index_id, file_id)

    async def drop(self, index_id: str) -> None:
        """Delete the whole index (directory included); a missing index is not an error."""
        await self._run(self._drop, index_id)

    async def count(self, index_id: str, file_id: str | None = None) -> int:
        """Chunks in the index, or of one file when ``file_id`` is given."""
        return await self._run(self._count, index_id, file_id)

    async def ready(self) -> bool:
        """The data directory exists and is writable (the first call also opens every index once,
        so a damaged one is reported at start-up, not at its first query)."""
        if not self._scanned:
            self._scanned = True
            await self._run(self._scan)
        return await self._run(self._ready)

    def damaged(self) -> dict[str, str]:
        """The indexes that cannot be read, with the reason (until dropped or rebuilt)."""
        return dict(self._damaged)

    async def close(self) -> None:
        """Finish pending merges, release every writer lock, stop the thread pool."""
        if self._closed:
            return
        self._closed = True
        await self._run(self._close_all)
        self._executor.shutdown(wait=True)

    # -- worker-thread side -------------------------------------------------------------------

    def _open(self, index_id: str, *, create: bool) -> _Handle | None:
        with self._registry:
            handle = self._handles.get(index_id)
            if handle is not None:
                return handle
            if index_id in self._damaged:
                raise IndexDamaged(index_id, self._damaged[index_id])
            path = self._dir / index_dir_name(index_id)
            exists = path.is_dir() and tantivy.Index.exists(str(path))
            if not exists and not create:
                return None
            path.mkdir(parents=True, exist_ok=True)
            try:
                index = tantivy.Index(self._schema, path=str(path), reuse=True)
            except ValueError as exc:
                raise self._damage(index_id, exc) from exc
            index.register_tokenizer(ANALYZER, self._analyzer)
            index.config_reader(reload_policy="Manual")
            handle = _Handle(index=index, path=path)
            self._handles[index_id] = handle
            return handle

    def _damage(self, index_id: str, exc: Exception) -> IndexDamaged:
        """Record ``index_id`` as damaged (logged once) and return the error to raise."""
        reason = str(exc)[:500]
        if index_id not in self._damaged:
            log.error("keyword index %s is damaged (%s); its retrieves use the dense leg only until it is "
                      "rebuilt: POST /api/v1/indexes/%s/rebuild or `quarry index rebuild`", index_id, reason, index_id)
        self._damaged[index_id] = reason
        self._handles.pop(index_id, None)
        return IndexDamaged(index_id, reason)

    def _reading(self, index_id: str, read: Callable[[], _T]) -> _T:
        """``read()``, with a read that finds the index's files corrupt or gone reported as damage."""
        try:
            return read()
        except ValueError as exc:
            if not _CORRUPTION.search(str(exc)):
                raise
            with self._registry:
                raise self._damage(index_id, exc) from exc

    def _scan(self) -> None:
        """Open every index directory once; the ones that fail are recorded as damaged."""
        for path in sorted(self._dir.iterdir()) if self._dir.is_dir() else []:
            if not path.is_dir() or path.name.startswith(("~", ".")):
                continue  # a hashed name cannot be mapped back to its id; it is found on first use
            with contextlib.suppress(IndexDamaged):
                self._open(path.name, create=False)
        if self._damaged:
            log.error("%d damaged keyword index(es): %s", len(self._damaged), ", ".join(sorted(self._damaged)))

    def _writer(self, handle: _Handle) -> tantivy.IndexWriter:
        if handle.writer is None:
            handle.writer = handle.index.writer(self._heap, self._writer_threads)
        return handle.writer

    def _document(self, chunk: Chunk) -> tantivy.Document:
        doc = tantivy.Document()
        doc.add_text("id", chunk.id)
        doc.add_text("file_id", chunk.file_id)
        doc.add_text("content", chunk.content)
        # The index id is not stored: it is the index the document lives in.
        doc.add_bytes("chunk", json.dumps(stored_fields(chunk), separators=(",", ":")).encode())
        kw, num = metadata_terms(chunk.file_id, chunk.metadata)
        for term in kw:
            doc.add_text(KW_FIELD, term)
        for term in num:
            doc.add_text(NUM_FIELD, term)
        return doc

    def _upsert(self, index_id: str, chunks: list[Chunk]) -> None:
        documents = [self._document(c) for c in chunks]
        while True:
            handle = self._open(index_id, create=True)
            assert handle is not None
            with handle.lock:
                if handle.dropped:  # dropped between open and lock: open it afresh
                    continue
                writer = self._writer(handle)
                try:
                    for chunk, doc in zip(chunks, documents, strict=True):
                        # A delete only affects documents added before it, so this replaces.
                        writer.delete_documents_by_term("id", chunk.id)
                        writer.add_document(doc)
                    writer.commit()
                except BaseException:
                    writer.rollback()
                    raise
                handle.index.reload()
                return

    def _text_query(self, text: str) -> tantivy.Query | None:
        tokens = Counter(self._analyzer.analyze(text))
        if not tokens:
            return None
        clauses = []
        for token, times in tokens.items():
            term = tantivy.Query.term_query(self._schema, "content", token)
            clauses.append(
                (tantivy.Occur.Should, term if times == 1 else tantivy.Query.boost_query(term, times))
            )
        return tantivy.Query.boolean_query(clauses)

    def _search(self, index_id: str, text: str, top_k: int, filter: FilterNode | None) -> list[Hit]:
        # The filter is compiled first so that a bad one is refused even when nothing would match.
        restriction = None if filter is None else self._filters.compile(filter)
        query = self._text_query(text)
        handle = self._open(index_id, create=False)
        if query is None or handle is None:
            return []
        if restriction is not None:
            query = tantivy.Query.boolean_query(
                [
                    (tantivy.Occur.Must, query),
                    (tantivy.Occur.Must, tantivy.Query.const_score_query(restriction, 0.0)),
                ]
            )
        def read() -> list[Hit]:
            searcher = handle.index.searcher()
            result = searcher.search(query, top_k, count=False)
            return [Hit(chunk=self._chunk(index_id, searcher.doc(address)), score=score)
                    for score, address in result.hits]

        return self._reading(index_id, read)

    @staticmethod
    def _chunk(index_id: str, doc: tantivy.Document) -> Chunk:
        def text(name: str) -> str:
            value = doc.get_first(name)
            return value if isinstance(value, str) else ""

        blob = doc.get_first("chunk")
        stored = json.loads(blob) if isinstance(blob, bytes | str) else {}
        return chunk_from_stored(text("id"), index_id, text("file_id"), text("content"), stored)

    def _count_file(self, handle: _Handle, file_id: str) -> int:
        query = tantivy.Query.term_query(self._schema, "file_id", file_id, index_option="basic")
        # limit must be >= 1 (tantivy panics on 0); only the count is read.
        result: Any = handle.index.searcher().search(query, 1, count=True)
        return int(result.count or 0)

    def _count(self, index_id: str, file_id: str | None) -> int:
        handle = self._open(index_id, create=False)
        if handle is None:
            return 0
        if file_id is None:
            return self._reading(index_id, lambda: int(handle.index.searcher().num_docs))
        return self._reading(index_id, lambda: self._count_file(handle, file_id))

    def _delete_file(self, index_id: str, file_id: str) -> int:
        handle = self._open(index_id, create=False)
        if handle is None:
            return 0
        with handle.lock:
            if handle.dropped:
                return 0
            found = self._count_file(handle, file_id)
            if found:
                writer = self._writer(handle)
                writer.delete_documents_by_term("file_id", file_id)
                writer.commit()
                handle.index.reload()
            return found

    def _drop(self, index_id: str) -> None:
        with self._registry:
            self._damaged.pop(index_id, None)  # a rebuild starts by dropping the damaged copy
            handle = self._handles.pop(index_id, None)
            if handle is not None:
                with handle.lock:
                    handle.dropped = True
                    self._release(handle)
            path = self._dir / index_dir_name(index_id)
            if path.exists():
                shutil.rmtree(path)

    @staticmethod
    def _release(handle: _Handle) -> None:
        if handle.writer is not None:
            writer, handle.writer = handle.writer, None
            writer.wait_merging_threads()

    def _ready(self) -> bool:
        probe = self._dir / ".ready-probe"
        try:
            probe.write_bytes(b"")
            probe.unlink()
        except OSError:
            log.warning("sparse data dir %s is not writable", self._dir)
            return False
        return True

    def _close_all(self) -> None:
        with self._registry:
            handles = list(self._handles.values())
            self._handles.clear()
        for handle in handles:
            with handle.lock:
                handle.dropped = True
                self._release(handle)
