"""Corpora for the benchmarks: any BEIR-layout folder, and synthetic text for load and scale.

Synthetic text draws words from the empirical word frequencies of the real collections in
``shared/datasets`` (a Zipf-shaped distribution over a real vocabulary), in sentences and
paragraphs, so BM25 and the embedding model see text with a realistic word distribution.
"""

from __future__ import annotations

import csv
import itertools
import json
import random
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

DEFAULT_DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
_WORD = re.compile(r"[a-z]{2,}")


@dataclass(frozen=True)
class Dataset:
    """A BEIR folder: ``corpus.jsonl``, ``queries.jsonl``, ``qrels/test.tsv``."""

    path: Path

    @property
    def name(self) -> str:
        return self.path.name

    @cached_property
    def docs(self) -> dict[str, str]:
        """Document id -> text (title and body; documents with neither are left out)."""
        out = {}
        with (self.path / "corpus.jsonl").open() as fh:
            for line in fh:
                row = json.loads(line)
                title, text = (row.get("title") or "").strip(), (row.get("text") or "").strip()
                body = f"{title}\n\n{text}" if title and text and not text.startswith(title) else (text or title)
                if body:
                    out[str(row["_id"])] = body
        return out

    @cached_property
    def queries(self) -> dict[str, str]:
        with (self.path / "queries.jsonl").open() as fh:
            rows = [json.loads(line) for line in fh]
        return {str(r["_id"]): r["text"] for r in rows}

    @cached_property
    def qrels(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        with (self.path / "qrels" / "test.tsv").open() as fh:
            for row in csv.DictReader(fh, delimiter="\t"):
                out.setdefault(row["query-id"], {})[row["corpus-id"]] = int(float(row["score"]))
        return out


def find_datasets(root: Path, names: Sequence[str] = ()) -> list[Dataset]:
    """The BEIR folders under ``root`` (or the named ones, which may also be paths)."""
    if names:
        return [Dataset(Path(n) if Path(n).is_dir() else root / n) for n in names]
    return [Dataset(p) for p in sorted(root.iterdir()) if (p / "corpus.jsonl").exists()]


class Vocabulary:
    """Words with their frequencies in a set of corpora, for sampling text and queries."""

    def __init__(self, counts: Counter[str], seed: int = 7) -> None:
        common = counts.most_common()
        self.words = [w for w, _ in common]
        self.weights = [c for _, c in common]
        # Cumulative once: ``choices(weights=...)`` would sum the whole vocabulary on every call.
        self._cum = list(itertools.accumulate(self.weights))
        self._tail_cum = list(itertools.accumulate(self.weights[200:]))
        self._rng = random.Random(seed)

    @classmethod
    def from_datasets(cls, datasets: Sequence[Dataset], seed: int = 7) -> Vocabulary:
        counts: Counter[str] = Counter()
        for ds in datasets:
            for text in ds.docs.values():
                counts.update(_WORD.findall(text.lower()))
        if not counts:
            raise ValueError("no words found in the datasets")
        return cls(counts, seed)

    def reseeded(self, seed: int) -> Vocabulary:
        """The same words with an independent random stream (queries apart from documents)."""
        return Vocabulary(Counter(dict(zip(self.words, self.weights, strict=True))), seed)

    def sample(self, n: int) -> list[str]:
        return self._rng.choices(self.words, cum_weights=self._cum, k=n)

    def paragraph(self, words: int) -> str:
        """Sentences of 6-20 words (capitalised, full stop) adding up to about ``words`` words."""
        out, left = [], words
        while left > 0:
            n = min(left, self._rng.randint(6, 20))
            sentence = self.sample(n)
            out.append(" ".join(sentence).capitalize() + ".")
            left -= n
        return " ".join(out)

    def document(self, paragraphs: int) -> str:
        """``paragraphs`` paragraphs of 60-140 words each, separated by blank lines."""
        return "\n\n".join(self.paragraph(self._rng.randint(60, 140)) for _ in range(paragraphs))

    def query(self) -> str:
        """2-5 words from outside the 200 most frequent (queries name content words)."""
        n = self._rng.randint(2, 5)
        tail = len(self.words) - 200
        picks = self._rng.choices(range(200, len(self.words)), cum_weights=self._tail_cum, k=n) if tail > 0 else []
        return " ".join(self.words[i] for i in picks) or " ".join(self.sample(n))


def synthetic_files(vocab: Vocabulary, start: int, count: int, paragraphs: int = 12) -> Iterator[tuple[str, str]]:
    """(file name, text) for files ``start`` .. ``start + count - 1``: ``paragraphs`` paragraphs
    of 60-140 words each, so most chunks hold one paragraph and its neighbour's overlap."""
    for i in range(start, start + count):
        yield f"synth-{i:07d}.txt", vocab.document(paragraphs)
