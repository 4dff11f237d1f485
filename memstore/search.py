"""Pure functions of recall: turning user text into a safe FTS5 query, and fusing ranked lists.

User text never reaches FTS5 as syntax: it is split into word tokens, each
token is double-quoted (so ``AND``, ``NEAR``, ``*``, ``:``, ``^`` and
parentheses are just words), and the tokens are OR-ed so bm25 ranks by how
many and how rare the matched words are.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = ["RRF_K", "fts_match", "keyword_terms", "rrf"]

#: Reciprocal Rank Fusion constant (Cormack et al. 2009).
RRF_K = 60

#: Most terms sent to FTS5 from one query.
MAX_TERMS = 64

_TOKEN = re.compile(r"\w+", re.UNICODE)

# Function words that carry no topic. Dropped from the keyword query unless nothing else is left.
STOPWORDS = frozenset(
    """
    a about above after again against all am an and any are as at be because been before
    being below between both but by can could did do does doing down during each few for
    from further had has have having he her here hers herself him himself his how i if in
    into is it its itself just me more most my myself no nor not now of off on once only or
    other our ours ourselves out over own same she should so some such than that the their
    theirs them themselves then there these they this those through to too under until up
    very was we were what when where which while who whom why will with would you your yours
    yourself yourselves
    """.split()  # noqa: SIM905
)


def keyword_terms(query: str) -> list[str]:
    """Lower-cased word tokens of the query, stopwords dropped (unless that leaves nothing),
    duplicates removed, order kept, at most MAX_TERMS."""
    # Non-ASCII tokens keep their case: FTS5 folds case itself, with the Unicode 6.1 tables
    # of its unicode61 tokenizer; Python's newer tables would lower-case letters FTS5 indexed
    # as they are (e.g. U+10570) and the term would never match.
    tokens = [t.lower() if t.isascii() else t for t in _TOKEN.findall(query)]
    seen: dict[str, str] = {}
    for token in tokens:
        if token.lower() not in STOPWORDS:
            seen.setdefault(token.lower(), token)
    if not seen:
        for token in tokens:
            seen.setdefault(token.lower(), token)
    return list(seen.values())[:MAX_TERMS]


def fts_match(terms: Sequence[str]) -> str | None:
    """An FTS5 MATCH expression OR-ing the quoted terms; None when there is nothing to match."""
    quoted = ['"' + term.replace('"', '""') + '"' for term in terms if term]
    return " OR ".join(quoted) if quoted else None


def rrf(
    legs: Sequence[Sequence[int]],
    k: int = RRF_K,
    weights: Sequence[float] | None = None,
) -> list[tuple[int, float]]:
    """Reciprocal Rank Fusion: score(d) = Σ w_i / (k + rank_i(d)), ranks 1-based.

    Returns (key, score) best first; ties keep the order of first appearance.
    """
    weights = weights or [1.0] * len(legs)
    scores: dict[int, float] = {}
    for leg, weight in zip(legs, weights, strict=False):
        for rank, key in enumerate(leg, start=1):
            scores[key] = scores.get(key, 0.0) + weight / (k + rank)
    return sorted(scores.items(), key=lambda item: -item[1])
