"""The retriever a user would write instead of memstore: the common RAG-guide recipe.

rank_bm25's BM25Okapi over lower-cased whitespace tokens, plus brute-force cosine with the
same embedding vectors memstore stores; each list max-normalised (score / best score), then
summed 50/50. Scores every document for every query, as the recipe does.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def tokens(text: str) -> list[str]:
    return text.lower().split()


class ReferenceRetriever:
    def __init__(self, ids: Sequence[str], texts: Sequence[str], vectors: np.ndarray) -> None:
        try:
            from rank_bm25 import BM25Okapi
        except ImportError as exc:  # pragma: no cover - a script dependency
            raise SystemExit("the reference retriever needs rank_bm25: pip install -e '.[eval]'") from exc
        self.ids = list(ids)
        self.bm25 = BM25Okapi([tokens(t) for t in texts])
        self.vectors = np.asarray(vectors, dtype=np.float32)

    def search(self, query: str, qvec: np.ndarray, k: int) -> list[str]:
        lexical = np.asarray(self.bm25.get_scores(tokens(query)), dtype=np.float64)
        cosine = self.vectors @ np.asarray(qvec, dtype=np.float32)
        score = 0.5 * _max_normalised(lexical) + 0.5 * _max_normalised(cosine.astype(np.float64))
        order = np.argsort(-score, kind="stable")[:k]
        return [self.ids[i] for i in order]


def _max_normalised(scores: np.ndarray) -> np.ndarray:
    top = scores.max() if len(scores) else 0.0
    return scores / top if top > 0 else np.zeros_like(scores)
