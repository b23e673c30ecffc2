"""An external rerank endpoint over HTTP.

Protocols:
  * ``tei`` (Hugging Face text-embeddings-inference): ``POST /rerank {"query", "texts"}`` ->
    ``[{"index", "score"}, ...]``.
  * ``cohere`` (Cohere, Jina, vLLM and others): ``POST /v1/rerank {"model", "query",
    "documents", "top_n"}`` -> ``{"results": [{"index", "relevance_score"}, ...]}``.

Passages go in batches of ``batch_size`` (TEI refuses more than its ``--max-client-batch-size``),
concurrently, all under one deadline; every request carries the time left as its timeout.
Connect errors and 5xx answers are retried (tenacity, short exponential backoff); 4xx answers
are not, and surface as ``BackendRejected``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Sequence
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential

from services.rerank.errors import BackendProtocolError, BackendRejected, BackendUnavailable

Protocol = Literal["tei", "cohere"]


class _ServerError(Exception):
    """A 5xx answer (retried, then reported as ``BackendUnavailable``)."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}: {body}")
        self.status = status


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, httpx.ConnectError | _ServerError)


def rerank_endpoint(url: str, protocol: Protocol) -> str:
    """The full rerank URL: ``url`` if it already ends in ``/rerank``, else the protocol's path."""
    url = url.rstrip("/")
    path = urlsplit(url).path
    if path.endswith("/rerank"):
        return url
    if protocol == "tei" or path.rsplit("/", 1)[-1] in {"v1", "v2"}:
        return url + "/rerank"
    return url + "/v1/rerank"


def _snippet(response: httpx.Response) -> str:
    return response.text[:200].replace("\n", " ")


def _parse(payload: Any, protocol: Protocol, n: int) -> list[float]:
    """Scores in request order from a TEI list or a Cohere ``results`` object."""
    items = payload.get("results") if protocol == "cohere" and isinstance(payload, dict) else payload
    key = "relevance_score" if protocol == "cohere" else "score"
    if not isinstance(items, list):
        kind = type(payload).__name__
        raise BackendProtocolError(f"rerank endpoint answered {kind}, not a {protocol} response")
    scores: list[float | None] = [None] * n
    for item in items:
        try:
            index, value = int(item["index"]), float(item[key])
        except (KeyError, TypeError, ValueError) as exc:
            raise BackendProtocolError(f"rerank endpoint item lacks index/{key}: {str(item)[:100]}") from exc
        if not 0 <= index < n:
            raise BackendProtocolError(f"rerank endpoint returned index {index} for {n} passages")
        scores[index] = value
    if any(s is None for s in scores):
        scored = sum(s is not None for s in scores)
        raise BackendProtocolError(f"rerank endpoint scored {scored} of {n} passages")
    return [float(s) for s in scores if s is not None]


async def _all_or_first_error(coros: list[Coroutine[Any, Any, list[float]]]) -> list[list[float]]:
    """Run concurrently; on the first failure cancel the rest and raise that failure itself."""
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(c) for c in coros]
    except ExceptionGroup as errors:
        raise errors.exceptions[0] from None
    return [t.result() for t in tasks]


class HttpReranker:
    """A TEI or Cohere-style ``/rerank`` endpoint; implements ``ports.Reranker``."""

    def __init__(
        self,
        url: str,
        *,
        protocol: Protocol = "tei",
        model: str | None = None,
        api_key: str | None = None,
        batch_size: int = 32,
        timeout: float = 10.0,
        retries: int = 2,
    ) -> None:
        self._endpoint = rerank_endpoint(url, protocol)
        self._base = self._endpoint.removesuffix("/rerank").removesuffix("/v1")
        self._protocol = protocol
        self._model = model
        self._batch_size = batch_size
        self._timeout = timeout
        self._retries = retries
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(headers=headers, timeout=httpx.Timeout(timeout))

    @property
    def model_name(self) -> str:
        return f"{self._protocol}:{self._model or self._endpoint}"

    @property
    def endpoint(self) -> str:
        return self._endpoint

    def _payload(self, query: str, batch: Sequence[str]) -> dict[str, Any]:
        if self._protocol == "tei":
            return {"query": query, "texts": list(batch), "truncate": True}
        body: dict[str, Any] = {"query": query, "documents": list(batch), "top_n": len(batch)}
        if self._model:
            body["model"] = self._model
        return body

    async def _post(self, body: dict[str, Any], deadline: float) -> Any:
        loop = asyncio.get_running_loop()
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._retries + 1),
            wait=wait_exponential(multiplier=0.05, max=1.0),
            retry=retry_if_exception(_retryable),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise TimeoutError("rerank deadline exceeded")
                response = await self._client.post(self._endpoint, json=body, timeout=remaining)
                if response.status_code >= 500:
                    raise _ServerError(response.status_code, _snippet(response))
                if response.status_code >= 400:
                    raise BackendRejected(
                        f"rerank endpoint {self._endpoint} refused the request: "
                        f"HTTP {response.status_code}: {_snippet(response)}"
                    )
                try:
                    return response.json()
                except ValueError as exc:
                    raise BackendProtocolError(
                        f"rerank endpoint answered non-JSON: {_snippet(response)}"
                    ) from exc
        raise AssertionError("unreachable: tenacity reraises the last error")  # pragma: no cover

    async def _batch(self, query: str, batch: Sequence[str], deadline: float) -> list[float]:
        return _parse(await self._post(self._payload(query, batch), deadline), self._protocol, len(batch))

    async def score(
        self, query: str, passages: Sequence[str], *, timeout: float | None = None
    ) -> list[float]:
        """One endpoint score per passage, in order; ``TimeoutError`` after ``timeout`` seconds."""
        if not passages:
            return []
        budget = self._timeout if timeout is None else timeout
        if budget <= 0:
            raise TimeoutError("rerank deadline exceeded")
        deadline = asyncio.get_running_loop().time() + budget
        batches = [passages[i : i + self._batch_size] for i in range(0, len(passages), self._batch_size)]
        try:
            async with asyncio.timeout(budget):
                parts = await _all_or_first_error([self._batch(query, b, deadline) for b in batches])
        except httpx.TimeoutException as exc:
            raise TimeoutError(f"rerank endpoint {self._endpoint} timed out") from exc
        except (httpx.TransportError, _ServerError) as exc:
            raise BackendUnavailable(f"rerank endpoint {self._endpoint} unavailable: {exc!r}") from exc
        return [s for part in parts for s in part]

    async def ready(self) -> bool:
        """TEI: ``GET /health`` answers 200. Cohere-style: the endpoint answers at all (no 5xx)."""
        probe = f"{self._base}/health" if self._protocol == "tei" else self._endpoint
        try:
            response = await self._client.get(probe, timeout=min(self._timeout, 2.0))
        except httpx.HTTPError:
            return False
        return response.status_code == 200 if self._protocol == "tei" else response.status_code < 500

    async def close(self) -> None:
        await self._client.aclose()
