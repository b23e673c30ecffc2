"""VectorIndex on a Qdrant server (or cluster) through ``qdrant-client``'s AsyncQdrantClient.

Layout: ONE collection per embedding model (``<prefix><model>-<dim>``), not one per Quarry
index. The Quarry index id is a payload field (``index_id``) with a keyword payload index
marked ``is_tenant``, and every read, count and delete filters by it. Why: Qdrant's
per-collection overhead (segments, WAL, optimiser threads, HNSW graphs) makes thousands of
small collections expensive, while tenant-keyed payload indexes let the server co-locate a
tenant's points and build per-tenant HNSW graphs (``m=0``, ``payload_m=<hnsw_m>``: no
global graph, because no query ever spans tenants). Dropping an index is a delete by filter.
All indexes in the collection share the model, so their vectors are comparable.

Payload layout and filter translation are shared with the embedded adapter
(``qdrant_common``). Differences: the server adapter keeps no case-keeping text index, so
``text_match`` (case-sensitive) is rejected as unsupported; ``text_match_insensitive`` uses
Qdrant's unindexed word-token match.

Vectors of a point: ``dense`` (the chunk's sentence vector, cosine, HNSW per tenant) and
``tokens`` (its late-interaction token vectors: a multivector compared by MaxSim, stored as
8-bit TurboQuant codes on disk, never graph-indexed: it is only scored for the chunks a query names). A collection
created before token vectors existed has one unnamed vector and keeps it: the adapter reads the
layout of an existing collection and answers ``late_scores`` with ``None`` there.

Collection settings (``CollectionConfig``, applied when the collection is created; an existing
collection keeps its own): HNSW ``m``/``ef_construct`` (as ``payload_m``, see above), vectors on
disk, scalar int8 quantization (quantile, quantized vectors always in RAM), shard number,
replication factor and write consistency factor. Payload indexes: ``index_id`` as a keyword
index with ``is_tenant``, ``file_id`` keyword, and one per metadata key on first sight (keyword,
float or bool, from the value's type). Searches send ``hnsw_ef`` and, with quantization, the
oversampling/rescore parameters.

qdrant-client's local mode (``:memory:`` or a path; the contract suite runs through it) takes
the same calls but is a brute-force engine: it ignores shards, replication, write consistency,
HNSW, on-disk vectors and quantization, warns about search parameters and payload indexes, so
the adapter sends neither there unless asked (``payload_indexes=True``).

Every call carries a timeout (the client's own ``timeout`` and an ``asyncio`` deadline).
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import grpc
import numpy as np
import numpy.typing as npt
from qdrant_client import AsyncQdrantClient, models
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from services.common.domain import Chunk, FilterNode, Hit
from services.common.errors import InvalidArgument, Unavailable
from services.dense.adapters.qdrant_common import (
    FILE_ID,
    FilterTranslator,
    chunk_from_payload,
    chunk_payload,
    index_kinds,
    point_id,
)

log = logging.getLogger(__name__)

INDEX_ID = "index_id"
T = TypeVar("T")


class ServerFilterBuilder:
    """Builds ``qdrant_client.models`` filter objects."""

    case_sensitive_text = False

    def match_value(self, key: str, value: str | bool) -> Any:
        return models.FieldCondition(key=key, match=models.MatchValue(value=value))

    def match_any(self, key: str, values: list[str]) -> Any:
        return models.FieldCondition(key=key, match=models.MatchAny(any=values))

    def range(self, key: str, *, gt: float | None = None, gte: float | None = None,
              lt: float | None = None, lte: float | None = None) -> Any:
        return models.FieldCondition(key=key, range=models.Range(gt=gt, gte=gte, lt=lt, lte=lte))

    def substring(self, key: str, value: str) -> Any:
        return models.FieldCondition(key=key, match=models.MatchSubstring(substring=value))

    def text(self, key: str, value: str) -> Any:
        return models.FieldCondition(key=key, match=models.MatchText(text=value))

    def is_empty(self, key: str) -> Any:
        return models.IsEmptyCondition(is_empty=models.PayloadField(key=key))

    def combine(self, must: list[Any] | None = None, should: list[Any] | None = None,
                must_not: list[Any] | None = None) -> Any:
        return models.Filter(must=must or None, should=should or None, must_not=must_not or None)

    def nothing(self) -> Any:
        return models.HasIdCondition(has_id=[])


_TRANSLATOR = FilterTranslator(ServerFilterBuilder())  # stateless: one serves every request


def server_filter(node: FilterNode) -> models.Filter:
    """The ``qdrant_client.models.Filter`` for an internal filter tree."""
    result: models.Filter = _TRANSLATOR.translate(node)
    return result


def collection_name(prefix: str, model_name: str, dim: int) -> str:
    """``<prefix><model>-<dim>`` with characters Qdrant dislikes replaced."""
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", model_name).strip("-").lower() or "model"
    return f"{prefix}{slug}-{dim}"


@dataclass(frozen=True, slots=True)
class CollectionConfig:
    """How the collection is created (see the module docstring); ``None`` = the server's default."""

    hnsw_m: int = 16
    hnsw_ef_construct: int = 100
    on_disk: bool = False
    quantization: Literal["none", "int8"] = "none"
    quantile: float = 0.99
    always_ram: bool = True
    shard_number: int | None = None
    replication_factor: int | None = None
    write_consistency_factor: int | None = None


#: Vector names of a collection with token vectors (an older one has one unnamed vector).
DENSE, TOKENS = "dense", "tokens"


def collection_params(config: CollectionConfig, dim: int, *, token_vectors: bool = False) -> dict[str, Any]:
    """The keyword arguments of ``create_collection`` for ``config`` (pure)."""
    quantization = (
        models.ScalarQuantization(
            scalar=models.ScalarQuantizationConfig(
                type=models.ScalarType.INT8, quantile=config.quantile, always_ram=config.always_ram
            )
        )
        if config.quantization == "int8"
        else None
    )
    dense = models.VectorParams(size=dim, distance=models.Distance.COSINE, on_disk=config.on_disk)
    vectors: models.VectorParams | dict[str, models.VectorParams] = dense
    if token_vectors:
        # The quantization is the sentence vector's alone; the token vectors are 8-bit codes on disk.
        vectors = {
            DENSE: models.VectorParams(size=dim, distance=models.Distance.COSINE, on_disk=config.on_disk,
                                       quantization_config=quantization),
            TOKENS: models.VectorParams(
                size=dim, distance=models.Distance.DOT, on_disk=True, datatype=models.Datatype.TURBO8,
                multivector_config=models.MultiVectorConfig(comparator=models.MultiVectorComparator.MAX_SIM),
                hnsw_config=models.HnswConfigDiff(m=0),
            ),
        }
        quantization = None
    return {
        "vectors_config": vectors,
        # No global graph: every query is filtered to one tenant, which gets its own (payload_m).
        "hnsw_config": models.HnswConfigDiff(m=0, payload_m=config.hnsw_m, ef_construct=config.hnsw_ef_construct),
        "quantization_config": quantization,
        "shard_number": config.shard_number,
        "replication_factor": config.replication_factor,
        "write_consistency_factor": config.write_consistency_factor,
    }


def search_params(
    config: CollectionConfig, search_ef: int | None, oversampling: float | None
) -> models.SearchParams | None:
    """Query-time parameters: ``hnsw_ef``, and rescoring with the originals under quantization."""
    quantization = (
        models.QuantizationSearchParams(rescore=True, oversampling=oversampling)
        if config.quantization != "none" and oversampling
        else None
    )
    if search_ef is None and quantization is None:
        return None
    return models.SearchParams(hnsw_ef=search_ef, quantization=quantization)


def _schema(kind: str) -> models.PayloadSchemaType:
    return {
        "keyword": models.PayloadSchemaType.KEYWORD,
        "float": models.PayloadSchemaType.FLOAT,
        "bool": models.PayloadSchemaType.BOOL,
    }[kind]


class QdrantServerVectorIndex:
    """VectorIndex over one Qdrant collection per model, the Quarry index id as tenant key."""

    def __init__(
        self,
        client: AsyncQdrantClient,
        *,
        model_name: str,
        dim: int,
        collection_prefix: str = "quarry-",
        timeout: float = 10.0,
        config: CollectionConfig | None = None,
        search_ef: int | None = None,
        oversampling: float | None = None,
        payload_indexes: bool | None = None,
        token_vectors: bool = False,
    ) -> None:
        self._client = client
        self._dim = dim
        self._collection = collection_name(collection_prefix, model_name, dim)
        self._timeout = timeout
        self._t = max(1, math.ceil(timeout))  # the client's per-request timeout: whole seconds
        self._config = config or CollectionConfig()
        options = client.init_options
        # Local mode (":memory:" or a path) builds no indexes and ignores search params.
        self._local = options.get("location") == ":memory:" or options.get("path") is not None
        self._payload_indexes = not self._local if payload_indexes is None else payload_indexes
        self._search_params = None if self._local else search_params(self._config, search_ef, oversampling)
        self._exists = False
        self._token_vectors = token_vectors
        #: Whether the collection has the named dense + tokens layout (None: not read yet).
        self._named: bool | None = None
        self._indexed: set[str] = set()
        self._lock = asyncio.Lock()

    @classmethod
    def connect(
        cls,
        url: str,
        *,
        api_key: str | None,
        timeout: float,
        prefer_grpc: bool = True,
        grpc_port: int = 6334,
        **kwargs: Any,
    ) -> QdrantServerVectorIndex:
        """An adapter with its own client for ``url`` (gRPC on ``grpc_port`` preferred).

        No request is made here (the client's version check is off), so a process starts
        while the server is still coming up; ``ready`` tells when it answers.
        """
        client = AsyncQdrantClient(
            url=url, api_key=api_key, prefer_grpc=prefer_grpc, grpc_port=grpc_port,
            timeout=math.ceil(timeout), check_compatibility=False,
        )
        return cls(client, timeout=timeout, **kwargs)

    @property
    def collection(self) -> str:
        return self._collection

    async def _call(self, awaitable: Awaitable[T]) -> T:
        try:
            return await asyncio.wait_for(awaitable, self._timeout)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNAVAILABLE:
                raise Unavailable("qdrant is unavailable") from exc
            if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise TimeoutError("qdrant call timed out") from exc
            raise
        except (ResponseHandlingException, ConnectionError) as exc:
            raise Unavailable("qdrant is unreachable") from exc

    @staticmethod
    def _tenant(index_id: str) -> models.FieldCondition:
        return models.FieldCondition(key=INDEX_ID, match=models.MatchValue(value=index_id))

    @staticmethod
    def _file(file_id: str) -> models.FieldCondition:
        return models.FieldCondition(key=FILE_ID, match=models.MatchValue(value=file_id))

    def _scoped(self, index_id: str, *extra: Any) -> models.Filter:
        if not index_id:
            raise InvalidArgument("index_id is required")
        return models.Filter(must=[self._tenant(index_id), *extra])

    async def _collection_exists(self) -> bool:
        if not self._exists:
            self._exists = await self._call(self._client.collection_exists(self._collection))
        return self._exists

    async def _ensure_collection(self) -> None:
        if self._exists:
            return
        async with self._lock:
            if await self._collection_exists():
                await self._read_layout()
                return
            try:
                await self._call(self._client.create_collection(
                    self._collection, **collection_params(self._config, self._dim, token_vectors=self._token_vectors),
                    timeout=self._t,
                ))
            except (ValueError, UnexpectedResponse, grpc.aio.AioRpcError):
                # "Already exists": another replica won the race to create it.
                if not await self._call(self._client.collection_exists(self._collection)):
                    raise
            self._exists = True
            await self._read_layout()  # another replica may have created it with another layout
            if self._payload_indexes:
                await self._create_index(INDEX_ID, models.KeywordIndexParams(
                    type=models.KeywordIndexType.KEYWORD, is_tenant=True))
                await self._create_index(FILE_ID, models.PayloadSchemaType.KEYWORD)

    async def _read_layout(self) -> None:
        info = await self._call(self._client.get_collection(self._collection))
        self._indexed.update(info.payload_schema or {})
        vectors = info.config.params.vectors
        self._named = isinstance(vectors, dict) and TOKENS in vectors

    async def _layout(self) -> bool | None:
        """Whether the existing collection has token vectors; None when there is no collection."""
        if self._named is None and await self._collection_exists():
            await self._read_layout()
        return self._named

    async def _create_index(self, path: str, schema: Any) -> None:
        try:
            await self._call(self._client.create_payload_index(
                self._collection, path, field_schema=schema, wait=True, timeout=self._t))
        except Exception:  # an index is an optimisation; filtering stays correct without it
            log.warning("could not create payload index %s", path, exc_info=True)
        self._indexed.add(path)

    async def ready(self) -> bool:
        """True when the server answers."""
        try:
            await self._call(self._client.get_collections())
        except Exception:
            return False
        return True

    async def close(self) -> None:
        await self._client.close()

    async def upsert(
        self,
        index_id: str,
        chunks: Sequence[Chunk],
        vectors: npt.NDArray[np.float32],
        tokens: Sequence[npt.NDArray[np.float16]] | None = None,
    ) -> None:
        """Write chunks with their vectors (and token vectors, where the collection keeps them);
        an existing id is overwritten."""
        if not index_id:
            raise InvalidArgument("index_id is required")
        if len(chunks) != len(vectors) or (tokens is not None and len(tokens) != len(chunks)):
            raise InvalidArgument("one vector per chunk is required")
        if not chunks:
            return
        if vectors.ndim != 2 or vectors.shape[1] != self._dim:
            raise InvalidArgument(f"vectors must have {self._dim} dimensions")
        await self._ensure_collection()
        if self._payload_indexes:
            for c in chunks:
                for path, kind in index_kinds(c.metadata):
                    if kind != "text" and path not in self._indexed:
                        await self._create_index(path, _schema(kind))
        rows: list[Any] = np.asarray(vectors, dtype=np.float32).tolist()
        if self._named:
            mats = tokens if tokens is not None else [None] * len(rows)
            rows = [{DENSE: row, **({TOKENS: m.astype(np.float32).tolist()} if m is not None and len(m) else {})}
                    for row, m in zip(rows, mats, strict=True)]
        points = [
            models.PointStruct(
                # The point id is scoped by the index: the same chunk id may exist in two indexes.
                id=self._point(index_id, c.id),
                vector=row,
                payload={INDEX_ID: index_id, **chunk_payload(c)},
            )
            for c, row in zip(chunks, rows, strict=True)
        ]
        await self._call(self._client.upsert(self._collection, points=points, wait=True, timeout=self._t))

    async def search(
        self, index_id: str, vector: npt.NDArray[np.float32], top_k: int, filter: FilterNode | None
    ) -> list[Hit]:
        """Top-k by cosine similarity among the index's chunks matching the filter."""
        flt = self._scoped(index_id, *([server_filter(filter)] if filter is not None else []))
        if top_k <= 0 or (named := await self._layout()) is None:
            return []
        query = np.asarray(vector, dtype=np.float32).reshape(-1)
        if query.shape[0] != self._dim:
            raise InvalidArgument(f"query vector must have {self._dim} dimensions")
        response = await self._call(self._client.query_points(
            self._collection, query=query.tolist(), using=DENSE if named else None, query_filter=flt,
            search_params=self._search_params, limit=top_k, with_payload=True, timeout=self._t,
        ))
        return [Hit(chunk_from_payload(index_id, p.id, p.payload), float(p.score)) for p in response.points]

    @staticmethod
    def _point(index_id: str, chunk_id: str) -> str:
        return point_id(f"{index_id}\x00{chunk_id}")

    async def late_scores(
        self, index_id: str, query: npt.NDArray[np.float32], chunk_ids: Sequence[str]
    ) -> list[float] | None:
        """MaxSim of each named chunk's stored token vectors, scored by the server; ``None`` when
        the collection keeps none or a chunk has none (see ``VectorIndex.late_scores``)."""
        if not chunk_ids:
            return []
        if not await self._layout() or query.shape[0] == 0:
            return None
        ids = [self._point(index_id, c) for c in chunk_ids]
        flt = self._scoped(index_id, models.HasIdCondition(has_id=list(dict.fromkeys(ids))))
        response = await self._call(self._client.query_points(
            self._collection, query=np.asarray(query, np.float32).tolist(), using=TOKENS, query_filter=flt,
            limit=len(set(ids)), with_payload=False, timeout=self._t,
        ))
        found = {str(p.id): float(p.score) for p in response.points}
        if len(found) < len(set(ids)):
            return None
        n = query.shape[0]  # the engine sums the per-query-token maxima; the mean is the score
        return [found[i] / n for i in ids]

    async def _delete(self, flt: models.Filter) -> int:
        if not await self._collection_exists():
            return 0
        n = await self._count(flt)
        if n:
            await self._call(self._client.delete(
                self._collection, points_selector=models.FilterSelector(filter=flt), wait=True,
                timeout=self._t))
        return n

    async def _count(self, flt: models.Filter) -> int:
        result = await self._call(self._client.count(self._collection, count_filter=flt, exact=True,
                                                     timeout=self._t))
        return int(result.count)

    async def delete_file(self, index_id: str, file_id: str) -> int:
        """Remove every chunk of one file; returns how many were removed (counted just before)."""
        return await self._delete(self._scoped(index_id, self._file(file_id)))

    async def drop(self, index_id: str) -> None:
        """Remove every point of the index; a missing index is not an error."""
        await self._delete(self._scoped(index_id))

    async def count(self, index_id: str, file_id: str | None = None) -> int:
        """Number of chunks in the index, or of one file in it."""
        flt = self._scoped(index_id, *([self._file(file_id)] if file_id else []))
        if not await self._collection_exists():
            return 0
        return await self._count(flt)
