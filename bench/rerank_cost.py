"""CPU cost of the late-interaction reranker per 20-passage window, before and after the
token-budget batching, at each passage token cap (in process; ``time.process_time`` with one
onnxruntime thread, so other load on a shared machine disturbs it far less than wall time)."""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from collections.abc import Sequence
from typing import Any

from bench.corpus import Dataset

OLD = 1_000_000  # no token budget: batches of batch_size rows, as before


def window_cpu_ms(texts: Sequence[str], *, max_tokens: int, batch_tokens: int, windows: int = 6,
                  seed: int = 1) -> dict[str, float]:
    from services.rerank.adapters.late_interaction import LateInteractionReranker

    reranker = LateInteractionReranker.load(max_tokens=max_tokens, batch_tokens=batch_tokens, threads=1, cache_size=0)
    rng = random.Random(seed)
    asyncio.run(reranker.score("warm up", list(texts[:4])))
    costs = []
    for _ in range(windows):
        window = rng.sample(list(texts), 20)
        t0 = time.process_time()
        asyncio.run(reranker.score("boundary layer transition on a flat plate", window))
        costs.append((time.process_time() - t0) * 1000)
    asyncio.run(reranker.close())
    return {"median": statistics.median(costs), "min": min(costs)}


def run(ds: Dataset, token_caps: Sequence[int] = (256, 128, 64), budgets: Sequence[int] = (OLD, 2048, 1024, 512),
        windows: int = 6) -> dict[str, Any]:
    texts = [t for t in ds.docs.values() if len(t) > 200]
    rows = []
    for cap in token_caps:
        for budget in budgets:
            cost = window_cpu_ms(texts, max_tokens=cap, batch_tokens=budget, windows=windows)
            rows.append({"max_tokens": cap, "batch_tokens": None if budget == OLD else budget, **cost})
            print(f"  tokens {cap:4d} budget {budget if budget != OLD else 'none':>7}: "
                  f"{cost['median']:.0f} ms CPU per 20-passage window", flush=True)
    return {"dataset": ds.name, "windows": windows, "rows": rows}
