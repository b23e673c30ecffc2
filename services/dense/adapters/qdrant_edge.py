"""VectorIndex on the embedded Qdrant engine (``qdrant-edge-py``): one shard per Quarry index.

Layout under ``data_dir``::

    <dir>/quarry.json   {"index_id": ..., "dim": ..., "tokens": true}
    <dir>/shard/        the EdgeShard (HNSW over cosine, WAL, payload indexes)

A point holds the chunk's sentence vector (the default, unnamed vector: HNSW over cosine) and,
in a shard created with ``"tokens": true``, its late-interaction token vectors (``tokens``: a
multivector compared by MaxSim, stored as Qdrant's 8-bit TurboQuant codes (384 bytes a token,
scores within ~4e-4 of float32), memory-mapped from disk and never graph-indexed, since it is
only ever scored for the few chunks a query names). Shards created before token vectors
existed keep their one unnamed vector; ``late_scores`` answers ``None`` for them.

``<dir>`` is the index id when it is a safe file name, else a hash of it; ``quarry.json``
maps it back, so every existing shard is reopened when the adapter starts. The engine is
synchronous: every call runs on a dedicated thread pool, and writes to one shard are
serialised by an asyncio lock (searches run concurrently with them). Segment optimisation
(building the HNSW graph) runs in the background after writes, under the same lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import re
import shutil
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
import qdrant_edge as qe

from services.common.domain import Chunk, FilterNode, Hit
from services.common.errors import InvalidArgument
from services.dense.adapters.qdrant_common import (
    FILE_ID,
    FilterTranslator,
    chunk_from_payload,
    chunk_payload,
    index_kinds,
    point_id,
)

log = logging.getLogger(__name__)

_SAFE_DIR = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,100}$")
_MARKER = "quarry.json"
#: The named multivector holding a chunk's late-interaction token vectors.
TOKENS = "tokens"
T = TypeVar("T")


class EdgeFilterBuilder:
    """Builds ``qdrant_edge`` filter objects (a case-keeping text index sits on meta_str.*)."""

    case_sensitive_text = True

    def match_value(self, key: str, value: str | bool) -> Any:
        if isinstance(value, bool):
            # The bindings read a Python bool as the integer 1/0 (bool subclasses int), which
            # never matches a stored boolean; numpy's bool is not an int and arrives as a bool.
            return qe.FieldCondition(key, match=qe.MatchValue(np.bool_(value)))  # type: ignore[arg-type]
        return qe.FieldCondition(key, match=qe.MatchValue(value))

    def match_any(self, key: str, values: list[str]) -> Any:
        return qe.FieldCondition(key, match=qe.MatchAny(values))

    def range(self, key: str, *, gt: float | None = None, gte: float | None = None,
              lt: float | None = None, lte: float | None = None) -> Any:
        return qe.FieldCondition(key, range=qe.RangeFloat(gte=gte, gt=gt, lte=lte, lt=lt))

    def substring(self, key: str, value: str) -> Any:
        return qe.FieldCondition(key, match=qe.MatchSubstring(value))

    def text(self, key: str, value: str) -> Any:
        return qe.FieldCondition(key, match=qe.MatchText(value))

    def is_empty(self, key: str) -> Any:
        return qe.IsEmptyCondition(key)

    def combine(self, must: list[Any] | None = None, should: list[Any] | None = None,
                must_not: list[Any] | None = None) -> Any:
        return qe.Filter(must=must or None, should=should or None, must_not=must_not or None)

    def nothing(self) -> Any:
        return qe.HasIdCondition(set())


_TRANSLATOR = FilterTranslator(EdgeFilterBuilder())  # stateless: one serves every request


def edge_filter(node: FilterNode) -> qe.Filter:
    """The ``qdrant_edge.Filter`` for an internal filter tree."""
    result: qe.Filter = _TRANSLATOR.translate(node)
    return result


def _file_filter(file_id: str) -> qe.Filter:
    return qe.Filter(must=[qe.FieldCondition(FILE_ID, match=qe.MatchValue(file_id))])


def _schema(kind: str) -> Any:
    if kind == "keyword":
        return qe.PayloadSchemaType.Keyword
    if kind == "float":
        return qe.PayloadSchemaType.Float
    if kind == "bool":
        return qe.PayloadSchemaType.Bool
    return qe.TextIndexParams(tokenizer=qe.TokenizerType.Word, lowercase=False)


@dataclass
class _Shard:
    index_id: str
    path: Path
    shard: qe.EdgeShard
    indexed: set[str]
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    tokens: bool = False
    dirty: bool = False
    optimizing: asyncio.Task[None] | None = None


class QdrantEdgeVectorIndex:
    """VectorIndex over embedded Qdrant shards, one directory per Quarry index."""

    def __init__(
        self,
        data_dir: str | Path,
        dim: int,
        *,
        hnsw_m: int = 16,
        hnsw_ef_construct: int = 100,
        full_scan_threshold_kb: int = 10_000,
        indexing_threshold_kb: int | None = None,
        search_ef: int | None = None,
        threads: int = 4,
        optimize_in_background: bool = True,
        token_vectors: bool = True,
    ) -> None:
        self._dir = Path(data_dir)
        self._dim = dim
        self._tokens = token_vectors
        self._hnsw = (hnsw_m, hnsw_ef_construct, full_scan_threshold_kb)
        self._indexing_threshold = indexing_threshold_kb
        self._search_params = qe.SearchParams(hnsw_ef=search_ef) if search_ef else None
        self._optimize = optimize_in_background
        self._executor = ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="qdrant-edge")
        self._shards: dict[str, _Shard] = {}
        self._open_lock = asyncio.Lock()
        self._dir.mkdir(parents=True, exist_ok=True)
        self._load_existing()

    # -- lifecycle -------------------------------------------------------------------------

    def _load_existing(self) -> None:
        for marker in sorted(self._dir.glob(f"*/{_MARKER}")):
            try:
                meta = json.loads(marker.read_text())
                index_id = str(meta["index_id"])
                shard = qe.EdgeShard.load(str(marker.parent / "shard"))
            except Exception:
                log.exception("could not reopen shard at %s", marker.parent)
                continue
            self._shards[index_id] = _Shard(index_id, marker.parent, shard, set(shard.info().payload_schema),
                                            tokens=bool(meta.get("tokens")))
        log.info("reopened %d dense shards from %s", len(self._shards), self._dir)

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _dir_for(self, index_id: str) -> Path:
        if _SAFE_DIR.match(index_id):
            return self._dir / index_id
        return self._dir / ("h-" + hashlib.sha256(index_id.encode()).hexdigest()[:40])

    def _config(self) -> qe.EdgeConfig:
        m, ef, threshold = self._hnsw
        dense = qe.EdgeVectorParams(size=self._dim, distance=qe.Distance.Cosine)
        vectors: qe.EdgeVectorParams | dict[str, qe.EdgeVectorParams] = dense
        if self._tokens:
            vectors = {"": dense, TOKENS: qe.EdgeVectorParams(
                # Unit rows, so the dot product is the cosine; m=0: no graph for a vector that is
                # only scored for named points.
                size=self._dim, distance=qe.Distance.Dot, on_disk=True,
                multivector_config=qe.MultiVectorConfig(qe.MultiVectorComparator.MaxSim),
                datatype=qe.VectorStorageDatatype.Turbo8,
                hnsw_config=qe.HnswIndexConfig(m=0, ef_construct=ef, full_scan_threshold=threshold),
            )}
        return qe.EdgeConfig(
            vectors=vectors,
            hnsw_config=qe.HnswIndexConfig(m=m, ef_construct=ef, full_scan_threshold=threshold),
            optimizers=(qe.EdgeOptimizersConfig(indexing_threshold=self._indexing_threshold)
                        if self._indexing_threshold is not None else None),
        )

    def _create(self, index_id: str) -> _Shard:
        path = self._dir_for(index_id)
        path.mkdir(parents=True, exist_ok=True)
        shard = qe.EdgeShard.create(str(path / "shard"), self._config())
        shard.update(qe.UpdateOperation.create_field_index(FILE_ID, qe.PayloadSchemaType.Keyword))
        tmp = path / (_MARKER + ".tmp")
        tmp.write_text(json.dumps({"index_id": index_id, "dim": self._dim, "tokens": self._tokens}))
        tmp.replace(path / _MARKER)
        return _Shard(index_id, path, shard, {FILE_ID}, tokens=self._tokens)

    async def _get(self, index_id: str, *, create: bool) -> _Shard | None:
        if not index_id:
            raise InvalidArgument("index_id is required")
        handle = self._shards.get(index_id)
        if handle is not None or not create:
            return handle
        async with self._open_lock:
            handle = self._shards.get(index_id)
            if handle is None:
                handle = await self._run(self._create, index_id)
                self._shards[index_id] = handle
            return handle

    async def ready(self) -> bool:
        """True when the data directory is usable."""
        return self._dir.is_dir()

    async def close(self) -> None:
        """Finish background optimisation, flush and close every shard."""
        handles = list(self._shards.values())
        self._shards.clear()
        for handle in handles:
            await self._settle(handle)
            async with handle.lock:
                await self._run(self._close_shard, handle.shard)
        self._executor.shutdown(wait=True)

    @staticmethod
    def _close_shard(shard: qe.EdgeShard) -> None:
        shard.flush()
        shard.close()

    # -- writes ----------------------------------------------------------------------------

    async def upsert(
        self,
        index_id: str,
        chunks: Sequence[Chunk],
        vectors: npt.NDArray[np.float32],
        tokens: Sequence[npt.NDArray[np.float16]] | None = None,
    ) -> None:
        """Write chunks with their vectors (and token vectors, where the shard keeps them); an
        existing id is overwritten."""
        if len(chunks) != len(vectors) or (tokens is not None and len(tokens) != len(chunks)):
            raise InvalidArgument("one vector per chunk is required")
        if not chunks:
            return
        if vectors.ndim != 2 or vectors.shape[1] != self._dim:
            raise InvalidArgument(f"vectors must have {self._dim} dimensions")
        handle = await self._get(index_id, create=True)
        assert handle is not None
        async with handle.lock:
            await self._run(self._write, handle, chunks, vectors, tokens)
            handle.dirty = True
        self._schedule_optimize(handle)

    @staticmethod
    def _write(handle: _Shard, chunks: Sequence[Chunk], vectors: npt.NDArray[np.float32],
               tokens: Sequence[npt.NDArray[np.float16]] | None) -> None:
        # Worker thread: building the points and payloads is CPU work kept off the event loop.
        rows: list[Any] = np.asarray(vectors, dtype=np.float32).tolist()
        if handle.tokens and tokens is not None:
            rows = [{"": row, TOKENS: m.astype(np.float32).tolist()} if len(m) else {"": row}
                    for row, m in zip(rows, tokens, strict=True)]
        points = [qe.Point(point_id(c.id), row, chunk_payload(c)) for c, row in zip(chunks, rows, strict=True)]
        handle.shard.update(qe.UpdateOperation.upsert_points(points))
        for c in chunks:
            for path, kind in index_kinds(c.metadata):
                if path in handle.indexed:
                    continue
                try:
                    handle.shard.update(qe.UpdateOperation.create_field_index(path, _schema(kind)))
                except Exception:  # an index is an optimisation; filtering stays correct without it
                    log.warning("could not create payload index %s (%s)", path, kind, exc_info=True)
                handle.indexed.add(path)

    def _schedule_optimize(self, handle: _Shard) -> None:
        if not self._optimize or (handle.optimizing is not None and not handle.optimizing.done()):
            return
        handle.optimizing = asyncio.create_task(self._optimize_shard(handle))

    @staticmethod
    async def _settle(handle: _Shard) -> None:
        """Wait for a running optimisation (the engine call cannot be interrupted mid-way)."""
        task = handle.optimizing
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _optimize_shard(self, handle: _Shard) -> None:
        while handle.dirty:
            async with handle.lock:
                if self._shards.get(handle.index_id) is not handle:
                    return
                handle.dirty = False
                try:
                    await self._run(handle.shard.optimize)
                except Exception:
                    log.exception("optimising shard %s failed", handle.index_id)
                    return

    async def delete_file(self, index_id: str, file_id: str) -> int:
        """Remove every chunk of one file; returns how many were removed."""
        handle = await self._get(index_id, create=False)
        if handle is None:
            return 0
        async with handle.lock:
            return await self._run(self._delete_by_filter, handle.shard, _file_filter(file_id))

    @staticmethod
    def _delete_by_filter(shard: qe.EdgeShard, flt: qe.Filter) -> int:
        n = shard.count(qe.CountRequest(exact=True, filter=flt))
        if n:
            shard.update(qe.UpdateOperation.delete_points_by_filter(flt))
        return n

    async def drop(self, index_id: str) -> None:
        """Remove the whole index (its directory); a missing index is not an error."""
        handle = await self._get(index_id, create=False)
        if handle is None:
            path = self._dir_for(index_id)
            if (path / _MARKER).exists():
                await self._run(shutil.rmtree, path, True)
            return
        async with self._open_lock:
            self._shards.pop(index_id, None)
        await self._settle(handle)
        async with handle.lock:
            await self._run(self._remove, handle)

    @staticmethod
    def _remove(handle: _Shard) -> None:
        handle.shard.close()
        shutil.rmtree(handle.path, ignore_errors=True)

    # -- reads -----------------------------------------------------------------------------

    async def search(
        self, index_id: str, vector: npt.NDArray[np.float32], top_k: int, filter: FilterNode | None
    ) -> list[Hit]:
        """Top-k by cosine similarity among chunks matching the filter."""
        if top_k <= 0:
            return []
        handle = await self._get(index_id, create=False)
        if handle is None:
            return []
        query = np.asarray(vector, dtype=np.float32).reshape(-1)
        if query.shape[0] != self._dim:
            raise InvalidArgument(f"query vector must have {self._dim} dimensions")
        request = qe.QueryRequest(
            limit=top_k,
            query=qe.Query.Nearest(query.tolist()),
            filter=edge_filter(filter) if filter is not None else None,
            with_payload=True,
            params=self._search_params,
        )
        return await self._run(self._query, handle.shard, request, index_id)

    @staticmethod
    def _query(shard: qe.EdgeShard, request: qe.QueryRequest, index_id: str) -> list[Hit]:
        # Worker thread, conversion included: rebuilding up to max_top_k chunks is not loop work.
        return [Hit(chunk_from_payload(index_id, p.id, p.payload), float(p.score)) for p in shard.query(request)]

    async def late_scores(
        self, index_id: str, query: npt.NDArray[np.float32], chunk_ids: Sequence[str]
    ) -> list[float] | None:
        """MaxSim of each named chunk's stored token vectors, scored by the engine; ``None`` when
        the shard keeps none or a chunk has none (see ``VectorIndex.late_scores``)."""
        if not chunk_ids:
            return []
        handle = await self._get(index_id, create=False)
        if handle is None or not handle.tokens or query.shape[0] == 0:
            return None
        ids = [point_id(c) for c in chunk_ids]
        request = qe.QueryRequest(
            limit=len(set(ids)),
            query=qe.Query.Nearest(np.asarray(query, np.float32).tolist(), using=TOKENS),
            filter=qe.Filter(must=[qe.HasIdCondition(set(ids))]),
            with_payload=False,
        )
        found = {str(p.id): float(p.score) for p in await self._run(handle.shard.query, request)}
        if len(found) < len(set(ids)):
            return None
        n = query.shape[0]  # the engine sums the per-query-token maxima; the mean is the score
        return [found[i] / n for i in ids]

    async def count(self, index_id: str, file_id: str | None = None) -> int:
        """Number of chunks in the index, or of one file in it."""
        handle = await self._get(index_id, create=False)
        if handle is None:
            return 0
        flt = _file_filter(file_id) if file_id else None
        return await self._run(handle.shard.count, qe.CountRequest(exact=True, filter=flt))
