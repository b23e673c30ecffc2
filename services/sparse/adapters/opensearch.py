"""``OpenSearchKeywordIndex``: the ``KeywordIndex`` port on an OpenSearch cluster (opensearch-py, async).

The requests are built by ``opensearch_dsl`` (index layout, analyzer, mapping, filter
translation: the reasons are there). This module does the I/O:

- Indexes are created on the first write: the index template is put once per process (unless
  the operator manages it), then the index is created with the same body. Both are idempotent,
  so racing writers and replicas are harmless; a write that finds its index gone (dropped by
  another replica) creates it again. A drop deletes the index.
- Writes: ``_bulk`` index actions (the chunk id is the document id, so a write replaces), cut
  into requests by count and size. At most ``concurrency`` bulk requests are in flight per
  process and further writers wait for a slot (back-pressure). Each request is retried with
  exponential backoff and jitter (tenacity) on connection errors, 429 and 5xx, and items the
  cluster rejected with 429/5xx are retried alone; other item failures are reported with the
  chunk id. ``refresh=wait_for``: a write returns once searches see it, without forcing a
  refresh per request (a forced refresh per bulk makes a tiny segment each time under ingest
  load); the price is up to one refresh interval of latency per write.
- Deletes by file: ``_delete_by_query`` on ``file_id`` with ``refresh=true`` (once per changed
  file, so its cost is fine), repeated while it reports conflicts with a concurrent write.
- Reads: a missing index answers no hits and a count of 0, never an error.

Every request carries the client's timeout. Connection failures, and 429/5xx after the retries,
surface as ``BackendUnavailable`` (gRPC UNAVAILABLE); a request timeout as ``TimeoutError``.
``ready`` pings the cluster (``GET /``, which needs the ``cluster:monitor/main`` permission).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from opensearchpy import AsyncOpenSearch
from opensearchpy.exceptions import (
    AuthenticationException,
    AuthorizationException,
    ConnectionError,
    ConnectionTimeout,
    NotFoundError,
    RequestError,
    TransportError,
)
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential, wait_random

from services.common.domain import Chunk, FilterNode, Hit
from services.sparse.adapters.opensearch_dsl import (
    BulkBatch,
    IndexLayout,
    ItemFailure,
    bulk_batches,
    bulk_failures,
    chunk_from_source,
    file_query,
    index_body,
    index_name,
    index_template,
    search_body,
    template_name,
)
from services.sparse.errors import BackendUnavailable, InvalidRequest

log = logging.getLogger(__name__)

_T = TypeVar("_T")
_INDEX_MISSING = "index_not_found_exception"
_ALREADY_EXISTS = frozenset({"resource_already_exists_exception"})
_DELETE_ROUNDS = 3


@dataclass(frozen=True, slots=True)
class WriteOptions:
    """How writes are batched, bounded and retried."""

    batch_size: int = 500
    max_bytes: int = 8 * 1024 * 1024
    concurrency: int = 2
    #: Retries after the first attempt, for every request (reads too).
    retries: int = 4


class _ItemsRejected(Exception):
    """Bulk items the cluster rejected with 429/5xx: retried alone, then reported."""

    def __init__(self, failures: Sequence[ItemFailure]) -> None:
        first = failures[0]
        super().__init__(f"{len(failures)} bulk item(s) rejected, first: HTTP {first.status} {first.type}")


def retryable_status(status: object) -> bool:
    """429 (the cluster pushing back) and 5xx answers are retried; other statuses are final."""
    return isinstance(status, int) and (status == 429 or status >= 500)


def retryable(exc: BaseException) -> bool:
    """Whether a failed request is worth another attempt (a timeout is not: the budget is spent)."""
    if isinstance(exc, _ItemsRejected):
        return True
    if isinstance(exc, ConnectionTimeout):
        return False
    if isinstance(exc, ConnectionError):
        return True
    return isinstance(exc, TransportError) and retryable_status(exc.status_code)


def _index_missing(exc: TransportError) -> bool:
    return isinstance(exc, NotFoundError) and exc.error == _INDEX_MISSING


def _reason(exc: TransportError) -> str:
    info = exc.info
    if isinstance(info, dict) and isinstance(info.get("error"), dict):
        causes = info["error"].get("root_cause") or [info["error"]]
        first = causes[0] if isinstance(causes[0], dict) else {}
        return f"{first.get('type', exc.error)}: {first.get('reason', '')}"[:300]
    return str(exc.error)[:300]


def _describe(failures: Sequence[ItemFailure], batch: BulkBatch) -> str:
    shown = "; ".join(f"chunk {batch.ids[f.position]!r}: {f.type}: {f.reason}"[:300] for f in failures[:3])
    more = f" (and {len(failures) - 3} more)" if len(failures) > 3 else ""
    return f"opensearch refused {len(failures)} chunk(s): {shown}{more}"


class OpenSearchKeywordIndex:
    """The ``KeywordIndex`` port on OpenSearch: one index per Quarry index (see ``opensearch_dsl``)."""

    def __init__(
        self,
        client: AsyncOpenSearch,
        *,
        layout: IndexLayout | None = None,
        writes: WriteOptions | None = None,
        timeout: float = 10.0,
        manage_template: bool = True,
    ) -> None:
        self._client = client
        self._layout = layout or IndexLayout()
        self._writes = writes or WriteOptions()
        self._timeout = timeout
        self._manage_template = manage_template
        self._template_put = False
        self._known: set[str] = set()  # indexes this process created or found
        self._create_lock = asyncio.Lock()
        self._bulk_slots = asyncio.Semaphore(self._writes.concurrency)
        # More than one shard: gather term statistics first so BM25 is exact across shards.
        self._search_params = {"search_type": "dfs_query_then_fetch"} if self._layout.shards > 1 else {}

    @classmethod
    def connect(
        cls,
        urls: Sequence[str],
        *,
        username: str | None = None,
        password: str | None = None,
        api_key: str | None = None,
        verify_certs: bool = True,
        ca_certs: str | None = None,
        timeout: float = 10.0,
        **kwargs: Any,
    ) -> OpenSearchKeywordIndex:
        """An adapter with its own client for the cluster at ``urls`` (no request is made here).

        ``api_key`` is sent as ``Authorization: ApiKey <key>`` (opensearch-py's convention);
        ``username``/``password`` as HTTP basic auth. Retries are this adapter's, not the
        transport's, so that one policy (backoff, 429) applies everywhere.
        """
        client = AsyncOpenSearch(
            hosts=list(urls),
            http_auth=(username, password or "") if username else None,
            headers={"authorization": f"ApiKey {api_key}"} if api_key else None,
            verify_certs=verify_certs,
            ssl_show_warn=verify_certs,
            ca_certs=ca_certs,
            timeout=timeout,
            max_retries=0,
            retry_on_timeout=False,
        )
        return cls(client, timeout=timeout, **kwargs)

    def index_name(self, index_id: str) -> str:
        """The OpenSearch index holding ``index_id``."""
        return index_name(self._layout.prefix, index_id)

    # -- plumbing -------------------------------------------------------------------------------

    async def _request(self, what: str, call: Callable[[], Awaitable[_T]]) -> _T:
        """``call()`` with the retry policy; final failures mapped to the service's errors.

        4xx answers other than 401/403/429 are re-raised for the caller to interpret.
        """
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._writes.retries + 1),
            wait=wait_exponential(multiplier=0.1, max=2.0) + wait_random(0, 0.1),
            retry=retry_if_exception(retryable),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    return await call()
        except ConnectionTimeout as exc:
            raise TimeoutError(f"opensearch {what} timed out") from exc
        except ConnectionError as exc:
            raise BackendUnavailable(f"opensearch is unreachable ({what})") from exc
        except (AuthenticationException, AuthorizationException) as exc:
            raise BackendUnavailable(
                f"opensearch refused the credentials ({what}): HTTP {exc.status_code} {_reason(exc)}"
            ) from exc
        except TransportError as exc:
            if retryable_status(exc.status_code):
                raise BackendUnavailable(
                    f"opensearch {what} failed after retries: HTTP {exc.status_code} {_reason(exc)}"
                ) from exc
            raise
        except _ItemsRejected as exc:
            raise BackendUnavailable(f"opensearch {what} failed after retries: {exc}") from exc
        raise AssertionError("unreachable: tenacity returns or re-raises")  # pragma: no cover

    async def _ensure_index(self, name: str) -> None:
        if name in self._known:
            return
        async with self._create_lock:
            if name in self._known:
                return
            if self._manage_template and not self._template_put:
                template = index_template(self._layout)
                await self._request(
                    "index template",
                    lambda: self._client.indices.put_index_template(
                        name=template_name(self._layout.prefix), body=template
                    ),
                )
                self._template_put = True
            body = index_body(self._layout)
            try:
                await self._request("create index", lambda: self._client.indices.create(index=name, body=body))
            except RequestError as exc:
                if exc.error not in _ALREADY_EXISTS:  # another writer created it first: fine
                    raise InvalidRequest(f"opensearch refused to create index {name}: {_reason(exc)}") from exc
            self._known.add(name)

    async def _bulk(self, name: str, batch: BulkBatch) -> None:
        pending = batch

        async def attempt() -> None:
            nonlocal pending
            response = await self._client.bulk(body=pending.body(), index=name, refresh="wait_for")
            failures = bulk_failures(response)
            if not failures:
                return
            missing = [f for f in failures if f.type == _INDEX_MISSING]
            again = [f for f in failures if retryable_status(f.status) or f in missing]
            final = [f for f in failures if f not in again]
            if final:
                raise InvalidRequest(_describe(final, pending))
            if missing:  # dropped by another replica meanwhile, where auto-create is off
                self._known.discard(name)
                await self._ensure_index(name)
            pending = pending.subset([f.position for f in again])
            raise _ItemsRejected(again)

        async with self._bulk_slots:
            await self._request("bulk write", attempt)

    # -- port -----------------------------------------------------------------------------------

    async def upsert(self, index_id: str, chunks: Sequence[Chunk]) -> None:
        """Write chunks; an existing id is replaced, never duplicated. Visible to search on return."""
        if not chunks:
            return
        name = self.index_name(index_id)
        batches = bulk_batches(chunks, max_docs=self._writes.batch_size, max_bytes=self._writes.max_bytes)
        await self._ensure_index(name)
        # Every batch runs to its end (writes are idempotent), then the first failure is raised.
        results = await asyncio.gather(*(self._bulk(name, b) for b in batches), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def search(self, index_id: str, query: str, top_k: int, filter: FilterNode | None) -> list[Hit]:
        """BM25 top-k over content among the chunks matching ``filter`` (a bool filter clause)."""
        if top_k <= 0:
            return []
        body = search_body(query, top_k, filter)  # compiled first: a bad filter is refused even here
        if not query.strip():
            return []
        name = self.index_name(index_id)
        try:
            response = await self._request(
                "search", lambda: self._client.search(index=name, body=body, **self._search_params)
            )
        except NotFoundError as exc:
            if _index_missing(exc):
                return []
            raise
        except RequestError as exc:
            raise InvalidRequest(f"opensearch refused the query: {_reason(exc)}") from exc
        return [
            Hit(chunk=chunk_from_source(index_id, hit["_source"]), score=float(hit["_score"]))
            for hit in response["hits"]["hits"]
        ]

    async def delete_file(self, index_id: str, file_id: str) -> int:
        """Delete every chunk of ``file_id``; returns how many were deleted."""
        name = self.index_name(index_id)
        body = file_query(file_id)
        deleted = 0
        for _ in range(_DELETE_ROUNDS):
            try:
                response = await self._request(
                    "delete by file",
                    lambda: self._client.delete_by_query(index=name, body=body, refresh=True, conflicts="proceed"),
                )
            except NotFoundError as exc:
                if _index_missing(exc):
                    return deleted
                raise
            deleted += int(response.get("deleted", 0))
            if not response.get("version_conflicts"):
                break
        return deleted

    async def drop(self, index_id: str) -> None:
        """Delete the index; a missing index is not an error."""
        name = self.index_name(index_id)
        try:
            await self._request("drop index", lambda: self._client.indices.delete(index=name))
        except NotFoundError as exc:
            if not _index_missing(exc):
                raise
        self._known.discard(name)

    async def count(self, index_id: str, file_id: str | None = None) -> int:
        """Chunks in the index, or of one file when ``file_id`` is given."""
        name = self.index_name(index_id)
        body = file_query(file_id) if file_id else None
        try:
            response = await self._request("count", lambda: self._client.count(index=name, body=body))
        except NotFoundError as exc:
            if _index_missing(exc):
                return 0
            raise
        return int(response["count"])

    def damaged(self) -> dict[str, str]:
        """None: OpenSearch recovers shards from replicas itself, and an index it cannot serve
        fails searches with 503 (``BackendUnavailable``), which degrades the same way."""
        return {}

    async def ready(self) -> bool:
        """Whether the cluster answers a ping within the timeout."""
        try:
            return bool(await asyncio.wait_for(self._client.ping(), self._timeout))
        except Exception:
            log.debug("opensearch ping failed", exc_info=True)
            return False

    async def close(self) -> None:
        await self._client.close()
