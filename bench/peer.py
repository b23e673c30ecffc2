"""The peer: what a LlamaIndex user assembles instead of Quarry, in one process.

A ``QueryFusionRetriever`` (reciprocal-rank fusion, no LLM query rewriting) over a
``VectorStoreIndex`` on a ``qdrant-client`` local-mode store and a ``BM25Retriever``, with the
same packaged MiniLM (wrapped as a LlamaIndex embedding) and the same chunks Quarry indexed,
read back with their vectors from Quarry's dense shard so the corpus is identical and
nothing is embedded twice.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.common.models import EncoderModel, load_encoder

SHARD_MARKER = "quarry.json"  # written by services.dense.adapters.qdrant_edge


@dataclass(frozen=True)
class StoredChunk:
    id: str
    file_name: str
    content: str
    vector: list[float]


def read_chunks(dense_dir: Path, index_id: str, page: int = 2048) -> list[StoredChunk]:
    """Every chunk of ``index_id`` with its vector, from the embedded Qdrant shard on disk
    (the dense process must be stopped: a shard is opened by one process at a time)."""
    import qdrant_edge as qe

    shard_dir = next((m.parent for m in dense_dir.glob(f"*/{SHARD_MARKER}")
                      if json.loads(m.read_text()).get("index_id") == index_id), None)
    if shard_dir is None:
        raise FileNotFoundError(f"no dense shard for index {index_id} under {dense_dir}")
    shard = qe.EdgeShard.load(str(shard_dir / "shard"))
    out: list[StoredChunk] = []
    try:
        offset = None
        while True:
            records, offset = shard.scroll(qe.ScrollRequest(offset=offset, limit=page, with_payload=True,
                                                             with_vector=True))
            for r in records:
                p = r.payload or {}
                vec = r.vector
                if isinstance(vec, dict):  # the unnamed vector is under "" (beside the token vectors)
                    vec = vec[""] if "" in vec else next(iter(vec.values()))
                out.append(StoredChunk(str(p.get("chunk_id") or r.id), str(p.get("file_name", "")),
                                       str(p.get("content", "")), list(vec)))
            if offset is None:
                return out
    finally:
        shard.close()


def _embedding_class() -> Any:
    from llama_index.core.base.embeddings.base import BaseEmbedding
    from pydantic import PrivateAttr

    class MiniLMEmbedding(BaseEmbedding):  # type: ignore[misc]
        """The packaged MiniLM (``services.common.models``) as a LlamaIndex embedding."""

        _encoder: EncoderModel = PrivateAttr()

        def __init__(self, encoder: EncoderModel, **kwargs: Any) -> None:
            super().__init__(model_name=encoder.name, embed_batch_size=32, **kwargs)
            self._encoder = encoder

        def _get_query_embedding(self, query: str) -> list[float]:
            return self._encoder.pooled([query])[0].tolist()  # type: ignore[no-any-return]

        def _get_text_embedding(self, text: str) -> list[float]:
            return self._encoder.pooled([text])[0].tolist()  # type: ignore[no-any-return]

        def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
            return self._encoder.pooled(texts).tolist()  # type: ignore[no-any-return]

        async def _aget_query_embedding(self, query: str) -> list[float]:
            return self._get_query_embedding(query)

    return MiniLMEmbedding


class PeerRetriever:
    """LlamaIndex hybrid retrieval over the given chunks; ``retrieve`` returns file names, best first."""

    def __init__(self, chunks: Sequence[StoredChunk], *, candidates: int = 100, top_k: int = 10,
                 encoder: EncoderModel | None = None) -> None:
        import Stemmer
        from llama_index.core import StorageContext, VectorStoreIndex
        from llama_index.core.llms import MockLLM
        from llama_index.core.retrievers import QueryFusionRetriever
        from llama_index.core.schema import TextNode
        from llama_index.retrievers.bm25 import BM25Retriever
        from llama_index.vector_stores.qdrant import QdrantVectorStore
        from qdrant_client import QdrantClient

        self.encoder = encoder or load_encoder()
        # A local-mode store says payload indexes do nothing there; the peer uses none.
        warnings.filterwarnings("ignore", message="Payload indexes have no effect", category=UserWarning)
        nodes = [TextNode(id_=c.id, text=c.content, embedding=c.vector, metadata={"file_name": c.file_name})
                 for c in chunks]
        self.client = QdrantClient(location=":memory:")
        store = QdrantVectorStore(client=self.client, collection_name="peer")
        index = VectorStoreIndex(nodes, storage_context=StorageContext.from_defaults(vector_store=store),
                                 embed_model=_embedding_class()(self.encoder))
        bm25 = BM25Retriever.from_defaults(nodes=nodes, similarity_top_k=candidates,
                                           stemmer=Stemmer.Stemmer("english"), language="english")
        self.retriever = QueryFusionRetriever(
            [index.as_retriever(similarity_top_k=candidates), bm25], llm=MockLLM(), mode="reciprocal_rerank",
            similarity_top_k=top_k, num_queries=1, use_async=False,
        )

    def retrieve(self, query: str) -> list[str]:
        return [n.node.metadata.get("file_name", "") for n in self.retriever.retrieve(query)]

    def close(self) -> None:
        self.client.close()
