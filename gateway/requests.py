"""The request models of both HTTP surfaces -> the use cases' ``RetrieveQuery``.

The gRPC servicer validates its requests through the same models, so a bad field is refused by
the same rule on every surface and named by the same path.
"""

from __future__ import annotations

from gateway import legacy_models as lm
from gateway import models
from gateway.filters import compile_custom_filters, compile_static_filters, conjunction
from gateway.settings import GatewaySettings
from gateway.usecases import RetrieveQuery
from services.common.domain import FilterNode


def v2_query(body: models.RetrieveRequest, extra: FilterNode | None = None,
             mode: str = "chunks", files_top_k: int | None = None,
             dense_cutoff: float | None = None) -> RetrieveQuery:
    """The v2 retrieve's fields (``extra``: a filter ANDed with its custom and static filters)."""
    rerank = body.rerank or models.RerankConfig()
    nodes = compile_custom_filters(body.custom_filters) + compile_static_filters(body.static_filters)
    return RetrieveQuery(
        index_id=body.index_id,
        query=body.query,
        top_k=body.top_k,
        num_candidates=body.num_candidates,
        dense_weight=body.vector_pipeline_weight,
        sparse_weight=body.full_text_pipeline_weight,
        fusion=body.fusion,
        rerank=rerank.enabled,
        rerank_top_n=rerank.top_n,
        score_threshold=body.score_threshold,
        filter=conjunction([*nodes, *([extra] if extra is not None else [])]),
        mode=mode,
        files_top_k=files_top_k,
        dense_cutoff=dense_cutoff,
    )


def legacy_query(index_id: str, body: lm.PipelineRetrieveRequest, settings: GatewaySettings,
                 flt: FilterNode | None) -> RetrieveQuery:
    """The legacy knobs: ``alpha`` is the dense weight (unset: the defaults), ``dense_similarity_top_k``
    the result count, ``sparse_similarity_top_k`` widens the candidates. Absent values take the same
    defaults as v2, so the two surfaces return the same chunks for the same query."""
    alpha = body.alpha
    widened = body.sparse_similarity_top_k
    return RetrieveQuery(
        index_id=index_id,
        query=body.query,
        top_k=body.dense_similarity_top_k,
        num_candidates=min(max(settings.defaults.num_candidates, widened), 10_000) if widened else None,
        dense_weight=alpha,
        sparse_weight=None if alpha is None else 1.0 - alpha,
        rerank=body.enable_reranking,
        rerank_top_n=body.rerank_top_n,
        filter=flt,
        dense_cutoff=body.dense_similarity_cutoff,
        mode=body.retrieval_mode or "chunks",
        files_top_k=body.files_top_k,
        weights_loc=("body", "alpha"),
    )
