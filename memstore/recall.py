"""Recall: both legs through the backend, score fusion, and the evidence of every hit.

Fusion is score-aware (see :func:`fuse`): the keyword evidence is the match's strength
(bm25 relative to the query's best keyword match), the vector evidence is the cosine itself,
and both are known for every candidate either leg found.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Literal, TypeVar

from .batch_embed import Embedding
from .errors import InvalidInputError
from .models import Hit
from .storage.base import Backend, Filter, KeywordMatch

__all__ = ["KEYWORD_WEIGHT", "LEG_DEPTH", "MODES", "VECTOR_WEIGHT", "Hits", "Mode", "fuse", "recall"]

K = TypeVar("K", bound=Hashable)
Mode = Literal["hybrid", "keyword", "semantic"]
MODES = ("hybrid", "keyword", "semantic")

# All measured with scripts/eval_retrieval.py; the results and every ablation are in
# docs/retrieval.md. Chosen on BEIR SciFact, then confirmed unchanged on LoCoMo (held out).

#: Weight of the keyword evidence (bm25 / best bm25 of the query, in [0, 1]) in the fused score.
KEYWORD_WEIGHT = 0.35
#: Weight of the vector evidence (cosine similarity, in [-1, 1]) in the fused score.
VECTOR_WEIGHT = 1.0 - KEYWORD_WEIGHT
#: Candidates each leg contributes to fusion (at least the requested limit). With both legs'
#: evidence filled in for every candidate, 100 was no better than 50 on either dataset.
LEG_DEPTH = 50


class Hits(list[Hit]):
    """The hits of one recall, best first, and the notices of that call (``notices``)."""

    notices: tuple[str, ...] = ()


def recall(backend: Backend, embedding: Embedding, query: str, limit: int, flt: Filter, mode: str) -> Hits:
    """Run the legs ``mode`` asks for, fuse them, and return the hits still live."""
    if mode not in MODES:
        raise InvalidInputError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    depth = max(limit, LEG_DEPTH)
    leg = backend.keyword_leg(query)
    keyword: list[KeywordMatch] = []
    vector: list[tuple[Hashable, float]] = []
    if mode in ("hybrid", "keyword"):
        keyword = leg.search(flt, depth)
    if mode in ("hybrid", "semantic"):
        model = embedding.model_id
        vector = backend.vector_search(embedding.query(query), flt, depth, model=model,
                                       required=mode == "semantic")
    matches = {m.key: m for m in keyword}
    similarity = dict(vector)
    if mode == "hybrid":  # both legs' evidence for every candidate either leg found
        matches.update(leg.evidence_for(k for k in similarity if k not in matches))
        if vector:
            unseen = [m.key for m in keyword if m.key not in similarity]
            similarity.update(backend.similarities(embedding.query(query), unseen, model=embedding.model_id))
    fused = fuse(
        {key: m.strength for key, m in matches.items()},
        similarity,
        [m.key for m in keyword] + [k for k, _ in vector],
    )[:limit]
    kw_rank = {m.key: r for r, m in enumerate(keyword, start=1)}
    vec_rank = {k: r for r, (k, _) in enumerate(vector, start=1)}
    memories = backend.memories_for([k for k, _ in fused])
    hits = Hits()
    for key, score in fused:
        memory = memories.get(key)
        if memory is None or memory.deleted or memory.superseded_by is not None:
            continue  # forgotten or updated by another process since the legs ran
        match = matches.get(key)
        hits.append(Hit(
            memory=memory, score=score, keyword_rank=kw_rank.get(key), vector_rank=vec_rank.get(key),
            similarity=similarity.get(key), bm25=match.bm25 if match else None,
        ))
    return hits


def fuse(
    keyword: Mapping[K, float],
    similarity: Mapping[K, float],
    order: Sequence[K],
    *,
    keyword_weight: float = KEYWORD_WEIGHT,
    vector_weight: float = VECTOR_WEIGHT,
) -> list[tuple[K, float]]:
    """Score-aware fusion of the two legs over the candidates in ``order``:

        score = keyword_weight · strength + vector_weight · cosine

    ``keyword`` maps a candidate to its keyword strength (``keyword_strength``), ``similarity``
    to its cosine; a candidate missing from one counts 0 there. Returns (key, score) best
    first; ties keep ``order``. Unlike rank fusion, a weak leg's poor candidates cannot push
    the strong leg's good ones down just by being ranked.
    """
    scored = [
        (key, keyword_weight * keyword.get(key, 0.0) + vector_weight * similarity.get(key, 0.0))
        for key in dict.fromkeys(order)
    ]
    return sorted(scored, key=lambda item: -item[1])
