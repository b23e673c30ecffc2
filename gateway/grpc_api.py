"""The public gRPC API (``quarry.retrieval.v1.Retrieval``): a thin adapter over ``gateway.usecases``.

Each call: the bearer key from the ``authorization`` metadata -> the caller's project; the
request converted into the same typed inputs the HTTP routes build, validated by the same models
(a bad field is INVALID_ARGUMENT with a ``google.rpc.BadRequest`` naming it by the HTTP 422
``loc`` path, less ``body``); the caller's deadline as the request budget (every leg, the
reranker and the catalog get what is left of it; when it passes, gRPC cancels the handler and the
calls in flight with it); the outcome converted back. Errors map once, in ``_mapped``.

Served on the gateway's event loop beside uvicorn, with the shared server chain (request id,
metrics, traces), health and reflection.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import grpc
import pydantic
from google.protobuf import any_pb2, json_format, struct_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from gateway import legacy_models as lm
from gateway import models, shaping
from gateway.admission import RateLimiter, Shed, key_digest
from gateway.auth import Unauthenticated
from gateway.field_errors import field_errors
from gateway.filters import FilterError, compile_metadata_filters
from gateway.requests import v2_query
from gateway.routes.media import ATTACHMENT_TYPE, attachment_name
from gateway.usecases import Answer, UseCases
from services._proto.quarry.files.v1 import files_pb2
from services._proto.quarry.retrieval.v1 import retrieval_pb2 as pb
from services._proto.quarry.retrieval.v1 import retrieval_pb2_grpc as pb_grpc
from services.common.grpc_server import SERVER_OPTIONS
from services.common.telemetry import server_interceptors

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Retrieval"].full_name

_V2_OPS = {pb.OPERATOR_UNSPECIFIED: "eq", pb.OPERATOR_EQ: "eq", pb.OPERATOR_NE: "ne", pb.OPERATOR_GT: "gt",
           pb.OPERATOR_GTE: "gte", pb.OPERATOR_LT: "lt", pb.OPERATOR_LTE: "lte", pb.OPERATOR_IN: "in",
           pb.OPERATOR_NIN: "nin"}
_TREE_OPS = {pb.OPERATOR_UNSPECIFIED: None, pb.OPERATOR_EQ: "==", pb.OPERATOR_NE: "!=", pb.OPERATOR_GT: ">",
             pb.OPERATOR_GTE: ">=", pb.OPERATOR_LT: "<", pb.OPERATOR_LTE: "<=", pb.OPERATOR_IN: "in",
             pb.OPERATOR_NIN: "nin", pb.OPERATOR_ANY: "any", pb.OPERATOR_ALL: "all",
             pb.OPERATOR_CONTAINS: "contains", pb.OPERATOR_TEXT_MATCH: "text_match",
             pb.OPERATOR_TEXT_MATCH_INSENSITIVE: "text_match_insensitive", pb.OPERATOR_IS_EMPTY: "is_empty"}
_COMBINATORS = {pb.COMBINATOR_UNSPECIFIED: None, pb.COMBINATOR_AND: "and", pb.COMBINATOR_OR: "or",
                pb.COMBINATOR_NOT: "not"}
_FUSIONS = {pb.FUSION_UNSPECIFIED: None, pb.FUSION_DBSF: "dbsf", pb.FUSION_RELATIVE_SCORE: "relative_score",
            pb.FUSION_RRF: "rrf"}
_MODES = {pb.RETRIEVAL_MODE_UNSPECIFIED: "chunks", pb.RETRIEVAL_MODE_CHUNKS: "chunks",
          pb.RETRIEVAL_MODE_FILES_VIA_CONTENT: "files_via_content",
          pb.RETRIEVAL_MODE_FILES_VIA_METADATA: "files_via_metadata",
          pb.RETRIEVAL_MODE_AUTO_ROUTED: "auto_routed"}
_MODE_ENUM = {"chunks": pb.RETRIEVAL_MODE_CHUNKS, "files_via_content": pb.RETRIEVAL_MODE_FILES_VIA_CONTENT,
              "files_via_metadata": pb.RETRIEVAL_MODE_FILES_VIA_METADATA}
#: HTTP field names that the gRPC request spells differently.
_RENAMED = {"vector_pipeline_weight": "dense_weight", "full_text_pipeline_weight": "sparse_weight",
            "search_filters": "filter_tree"}

#: Backend status codes the caller sees as they are; anything else is INTERNAL (details hidden).
_PASSED = {grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.OUT_OF_RANGE,
           grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.PERMISSION_DENIED,
           grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
           grpc.StatusCode.CANCELLED}
#: Deterministic conflicts: retrying does not help, changing the state first does.
_PRECONDITION = {grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.ABORTED, grpc.StatusCode.DATA_LOSS}


class RateLimited(Exception):
    def __init__(self, retry_after: float) -> None:
        super().__init__("rate limit exceeded for this API key")
        self.retry_after = retry_after


class Invalid(Exception):
    """INVALID_ARGUMENT with one violation per bad field (path, message)."""

    def __init__(self, violations: Sequence[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{f}: {m}" for f, m in violations))
        self.violations = list(violations)


def field_path(loc: Iterable[str | int]) -> str:
    """An HTTP 422 ``loc`` as a field path: ``("body", "custom_filters", "year", 0, "value")`` ->
    ``custom_filters.year[0].value`` (HTTP names the gRPC request spells differently renamed)."""
    out = ""
    parts = [p for p in loc if p != "body"]
    for i, part in enumerate(parts):
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            name = _RENAMED.get(part, part) if i == 0 else part
            out += f".{name}" if out else name
    return out


def _validation(exc: pydantic.ValidationError, prefix: Sequence[str | int] = ()) -> Invalid:
    return Invalid([(field_path((*prefix, *e["loc"])), e["msg"]) for e in field_errors(exc.errors())])


# ---- requests -------------------------------------------------------------------------------


def _value(v: struct_pb2.Value) -> Any:
    return None if v.WhichOneof("kind") is None else json_format.MessageToDict(v)


def _opt(message: Any, name: str) -> Any:
    return getattr(message, name) if message.HasField(name) else None


def _custom_filters(conditions: Sequence[pb.Condition]) -> dict[str, Any] | None:
    """Repeated conditions -> the v2 map: one condition per key, or that key's list of range bounds."""
    if not conditions:
        return None
    by_key: dict[str, list[dict[str, Any]]] = {}
    for c in conditions:
        op = _V2_OPS.get(c.operator, pb.Operator.Name(c.operator).removeprefix("OPERATOR_").lower())
        by_key.setdefault(c.key, []).append({"operator": op, "value": _value(c.value)})
    return {k: v[0] if len(v) == 1 else v for k, v in by_key.items()}


def _tree(group: pb.FilterGroup) -> dict[str, Any]:
    filters: list[dict[str, Any]] = []
    for node in group.filters:
        if node.WhichOneof("node") == "group":
            filters.append(_tree(node.group))
        else:
            c = node.condition
            filters.append({"key": c.key, "operator": _TREE_OPS[c.operator], "value": _value(c.value)})
    return {"filters": filters, "condition": _COMBINATORS[group.combinator]}


def retrieve_query(request: pb.RetrieveRequest) -> Any:
    """The request as the use case's ``RetrieveQuery``, validated by the HTTP surfaces' models."""
    rerank = None
    if request.HasField("rerank"):
        rerank = {"enabled": _opt(request.rerank, "enabled"), "top_n": _opt(request.rerank, "top_n")}
    static = None
    if request.HasField("static_filters") and request.static_filters.HasField("parsed_directory_file_id"):
        f = request.static_filters.parsed_directory_file_id
        static = {"parsed_directory_file_id": {"operator": _V2_OPS.get(f.operator, "unsupported"),
                                               "value": _value(f.value)}}
    fields = {
        "index_id": request.index_id, "query": request.query, "top_k": _opt(request, "top_k"),
        "num_candidates": _opt(request, "num_candidates"),
        "vector_pipeline_weight": _opt(request, "dense_weight"),
        "full_text_pipeline_weight": _opt(request, "sparse_weight"),
        "fusion": _FUSIONS.get(request.fusion, "unknown"), "rerank": rerank,
        "score_threshold": _opt(request, "score_threshold"),
        "custom_filters": _custom_filters(request.custom_filters), "static_filters": static,
    }
    violations: list[tuple[str, str]] = []
    try:
        body = models.RetrieveRequest.model_validate(fields)
    except pydantic.ValidationError as exc:
        violations += _validation(exc).violations
    tree = None
    if request.HasField("filter_tree"):
        try:
            tree = lm.MetadataFilters.model_validate(_tree(request.filter_tree))
        except pydantic.ValidationError as exc:
            violations += _validation(exc, ("filter_tree",)).violations
    files_top_k = _opt(request, "files_top_k")
    if files_top_k is not None and not 1 <= files_top_k <= 100:
        violations.append(("files_top_k", "files_top_k is between 1 and 100"))
    if request.retrieval_mode not in _MODES:
        violations.append(("retrieval_mode", f"unknown retrieval mode {request.retrieval_mode}"))
    if violations:
        raise Invalid(violations)
    return v2_query(body, extra=compile_metadata_filters(tree, ("filter_tree",)),
                    mode=_MODES[request.retrieval_mode], files_top_k=files_top_k,
                    dense_cutoff=_opt(request, "dense_similarity_cutoff"))


def _checked(model: type[pydantic.BaseModel], fields: Mapping[str, Any]) -> Any:
    try:
        return model.model_validate(fields)
    except pydantic.ValidationError as exc:
        raise _validation(exc) from None


# ---- responses ------------------------------------------------------------------------------


def _struct(values: Mapping[str, Any]) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(dict(values))
    return out


def retrieve_response(answer: Answer) -> pb.RetrieveResponse:
    out = pb.RetrieveResponse(latency=answer.latency, degraded=answer.degraded, cached=answer.cached,
                              retrieval_mode=_MODE_ENUM[answer.mode], routing_reason=answer.routing_reason or "")
    for r in answer.results:
        c = r.fused.chunk
        out.results.append(pb.Result(
            chunk_id=c.id, content=c.content, metadata=_struct(c.metadata), score=r.fused.score,
            dense_score=r.fused.dense_score, sparse_score=r.fused.sparse_score, rerank_score=r.rerank_score,
            file_name=c.file_name, source_id=c.source_id,
            static_fields=pb.StaticFields(
                parsed_directory_file_id=c.file_id, chunk_index=c.chunk_index, chunk_start_char=c.start_char,
                chunk_end_char=c.end_char, chunk_token_count=c.token_count,
                page_range_start=c.page_start or None, page_range_end=c.page_end or None,
                attachments=[pb.Attachment(attachment_name=attachment_name(p), source_id=c.file_id,
                                           type=ATTACHMENT_TYPE) for p in answer.attachment_pages(c)],
            ),
        ))
    for f in answer.files:
        out.files.append(pb.FileResult(file_id=f.chunk.file_id, file_name=f.chunk.file_name, score=f.score,
                                       text=f.text, metadata=_struct(f.chunk.metadata),
                                       source_id=f.chunk.source_id))
    return out


def index_message(index: files_pb2.Index, engine_health: Mapping[str, str] | None = None) -> pb.Index:
    shaped = shaping.index(index)
    progress = shaped.sync_progress
    return pb.Index(
        id=shaped.id, name=shaped.name, project_id=shaped.project_id,
        source_directory_id=shaped.source_directory_id, output_directory_id=shaped.output_directory_id,
        created_at=shaped.created_at or "", updated_at=shaped.updated_at or "",
        last_synced_at=shaped.last_synced_at or "", description=shaped.description or "",
        metadata=_struct(shaped.metadata or {}), sync_status=shaped.sync_status or "",
        sync_progress=pb.SyncProgress(
            job_id=progress["job_id"], total_items=progress["total_items"], done_items=progress["done_items"],
            failed_items=progress["failed_items"], error=progress["error"] or "",
            failures=[pb.SyncFailure(**f) for f in progress["failures"]],
        ) if progress else None,
        engine_health=dict(engine_health or {}),
    )


# ---- errors ---------------------------------------------------------------------------------


def _bad_request(exc: Invalid) -> tuple[tuple[str, bytes], ...]:
    detail = any_pb2.Any()
    detail.Pack(error_details_pb2.BadRequest(field_violations=[
        error_details_pb2.BadRequest.FieldViolation(field=f, description=m) for f, m in exc.violations
    ]))
    status = status_pb2.Status(code=code_pb2.INVALID_ARGUMENT, message=str(exc), details=[detail])
    return (("grpc-status-details-bin", status.SerializeToString()),)


def _failure(exc: Exception) -> tuple[grpc.StatusCode, str, tuple[tuple[str, Any], ...]]:
    """(code, message, trailing metadata) of what a call raised."""
    if isinstance(exc, Invalid):
        return grpc.StatusCode.INVALID_ARGUMENT, str(exc), _bad_request(exc)
    if isinstance(exc, FilterError):
        return _failure(Invalid([(field_path(exc.loc), exc.msg)]))
    if isinstance(exc, Unauthenticated):
        return grpc.StatusCode.UNAUTHENTICATED, str(exc), ()
    if isinstance(exc, RateLimited):
        return grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc), (("retry-after", str(max(1, math.ceil(exc.retry_after)))),)
    if isinstance(exc, Shed):
        return grpc.StatusCode.UNAVAILABLE, str(exc), (("retry-after", str(max(1, math.ceil(exc.retry_after)))),)
    if isinstance(exc, TimeoutError):
        return grpc.StatusCode.DEADLINE_EXCEEDED, "request deadline exceeded", ()
    if isinstance(exc, grpc.aio.AioRpcError):
        code = exc.code()
        if code in _PASSED:
            message = exc.details() or code.name.lower()
            if code == grpc.StatusCode.UNAVAILABLE:
                message = "a backend service is unavailable"
            return code, message, ()
        if code in _PRECONDITION:
            return grpc.StatusCode.FAILED_PRECONDITION, exc.details() or code.name.lower(), ()
        log.error("backend call failed: %s %s", code.name, exc.details())
    else:
        log.exception("unhandled error in the gRPC API")
    return grpc.StatusCode.INTERNAL, "internal error", ()


T = TypeVar("T")


def _mapped(method: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
    """Authenticate (and rate-limit) the caller, run the method, map what it raises once."""

    @functools.wraps(method)
    async def call(self: RetrievalServicer, request: Any, context: grpc.aio.ServicerContext) -> T:
        try:
            project = await self.caller(context)
            return await method(self, request, context, project)
        except Exception as exc:
            code, message, trailing = _failure(exc)
        context.set_trailing_metadata(trailing)
        await context.abort(code, message)
        raise AssertionError("abort returned")  # pragma: no cover

    return call


# ---- the servicer ---------------------------------------------------------------------------


class RetrievalServicer(pb_grpc.RetrievalServicer):
    def __init__(self, usecases: UseCases, limiter: RateLimiter | None = None) -> None:
        self.use = usecases
        self.limiter = limiter

    async def caller(self, context: grpc.aio.ServicerContext) -> files_pb2.Project:
        metadata = {k: v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}
        authorization = metadata.get("authorization", "")
        identity = await self.use.authenticate(authorization)
        if self.limiter is not None and (digest := key_digest(authorization)) is not None:
            wait = await self.limiter.take(digest)
            if wait > 0:
                raise RateLimited(wait)
        return identity.project

    def _budget(self, context: grpc.aio.ServicerContext) -> Any:
        return self.use.budget(context.time_remaining())

    @_mapped
    async def Retrieve(self, request: pb.RetrieveRequest, context: grpc.aio.ServicerContext,
                       project: files_pb2.Project) -> pb.RetrieveResponse:
        _, answer = await self.use.retrieve(project.id, retrieve_query(request), self._budget(context))
        return retrieve_response(answer)

    @_mapped
    async def Find(self, request: pb.FindRequest, context: grpc.aio.ServicerContext,
                   project: files_pb2.Project) -> pb.FindResponse:
        body = _checked(models.FindRequest, {
            "index_id": request.index_id, "file_name": request.file_name or None,
            "file_name_contains": request.file_name_contains or None,
            "page_size": request.page_size or None, "page_token": request.page_token or None,
        })
        found = await self.use.find(project.id, body.index_id, body.file_name, body.file_name_contains,
                                    body.page_size, body.page_token, self._budget(context))
        return pb.FindResponse(items=[pb.FoundFile(file_id=f.file_id, file_name=f.file_name) for f in found.items],
                               next_page_token=found.next_page_token, total_size=found.total_size)

    @_mapped
    async def Grep(self, request: pb.GrepRequest, context: grpc.aio.ServicerContext,
                   project: files_pb2.Project) -> pb.GrepResponse:
        body = _checked(models.GrepRequest, {
            "index_id": request.index_id, "file_id": request.file_id, "pattern": request.pattern,
            "context_chars": request.context_chars, "page_size": request.page_size or None,
            "page_token": request.page_token or None,
        })
        found = await self.use.grep(project.id, body.index_id, body.file_id, body.pattern, body.context_chars,
                                    body.page_size, body.page_token, self._budget(context))
        return pb.GrepResponse(
            items=[pb.GrepMatch(content=m.content, start_char=m.start_char, end_char=m.end_char) for m in found.items],
            next_page_token=found.next_page_token, total_size=found.total_size,
        )

    @_mapped
    async def Read(self, request: pb.ReadRequest, context: grpc.aio.ServicerContext,
                   project: files_pb2.Project) -> pb.ReadResponse:
        body = _checked(models.ReadRequest, {
            "index_id": request.index_id, "file_id": request.file_id, "offset": request.offset,
            "max_length": _opt(request, "max_length"),
        })
        content = await self.use.read(project.id, body.index_id, body.file_id, body.offset, body.max_length,
                                      self._budget(context))
        return pb.ReadResponse(content=content)

    @_mapped
    async def ListIndexes(self, request: pb.ListIndexesRequest, context: grpc.aio.ServicerContext,
                          project: files_pb2.Project) -> pb.ListIndexesResponse:
        if request.page_size < 0:
            raise Invalid([("page_size", "page_size is at least 0")])
        page = await self.use.list_indexes(project.id, request.page_size or None, request.page_token or None,
                                           request.source_directory_id or None, self._budget(context))
        return pb.ListIndexesResponse(items=[index_message(i) for i in page.items],
                                      next_page_token=page.next_page_token, total_size=page.total_size)

    @_mapped
    async def GetIndex(self, request: pb.GetIndexRequest, context: grpc.aio.ServicerContext,
                       project: files_pb2.Project) -> pb.Index:
        if not request.index_id:
            raise Invalid([("index_id", "index_id is required")])
        index = await self.use.index(project.id, request.index_id, budget=self._budget(context))
        return index_message(index, await self.use.engine_health(index.id))


async def start(host: str, port: int, usecases: UseCases, limiter: RateLimiter | None) -> tuple[grpc.aio.Server, int]:
    """Serve the API (with health and reflection) on ``host:port``; returns the server and bound port."""
    server = grpc.aio.server(options=SERVER_OPTIONS, interceptors=server_interceptors("gateway"))
    pb_grpc.add_RetrievalServicer_to_server(RetrievalServicer(usecases, limiter), server)
    checks = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(checks, server)
    reflection.enable_server_reflection([SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise RuntimeError(f"could not bind the gRPC API on {host}:{port}")
    await server.start()
    for name in ("", SERVICE_NAME):
        await checks.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info("gRPC API serving %s on %s:%d", SERVICE_NAME, host, bound)
    return server, bound
