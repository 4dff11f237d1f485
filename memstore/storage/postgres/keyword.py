"""The keyword leg on PostgreSQL: the same three sources and strengths as SQLite's leg.

Words: the tsvector index, ranked by BM25 (``sql.keyword_search``: measured within 0.01 of
FTS5's bm25 on LoCoMo and SciFact, where ``ts_rank``/``ts_rank_cd`` lose 0.09–0.32 nDCG@10;
docs/team-store.md) — computed in process by ``keyword_ranking`` where the backend keeps
one. CJK: the query's 3-character windows looked up through the pg_trgm
index of memories holding CJK text, ranked by how many windows each contains; then, for
what trigrams cannot match, its 1–2 character words and bigrams as substrings, ranked below
every indexed match. Strength is each score relative to the best of its source (in [0, 1]);
a memory found by several sources keeps its strongest.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from ..base import Filter, Key, KeywordMatch
from ..terms import (
    EVIDENCE_FACTOR,
    cjk_grams,
    cjk_substrings,
    has_cjk,
    keyword_strength,
    keyword_terms,
)
from . import sql

if TYPE_CHECKING:
    from .keyword_ranking import KeywordRanking

__all__ = ["KeywordLeg"]


def _few_passing(conn: Any, flt: Filter) -> list[int] | None:
    """Every memory a selective filter passes, when they are at most EXACT_FILTER_MAX (the
    vector leg's limit for exact search); None when there are more."""
    seqs = sql.filtered_seqs(conn, flt, sql.EXACT_FILTER_MAX)
    return seqs if len(seqs) <= sql.EXACT_FILTER_MAX else None


class KeywordLeg:
    """The keyword side of one recall on the team store."""

    def __init__(self, op: Callable[[], AbstractContextManager[Any]], stats: sql.CorpusStats,
                 query: str, ranking: Callable[[Any], KeywordRanking | None] | None = None) -> None:
        self._op = op  # the backend's connection for one operation
        self._stats = stats
        self._ranking = ranking  # the backend's in-process ranking, when it has (or builds) one
        self._terms = keyword_terms(query)
        self._grams = cjk_grams(query) if has_cjk(query) else []
        self._substrings = cjk_substrings(query) if has_cjk(query) else []
        self._beyond: dict[Key, KeywordMatch] = {}
        self._scanned = False
        self._floor = 1.0

    def search(self, flt: Filter, depth: int) -> list[KeywordMatch]:
        found: dict[Key, KeywordMatch] = {}
        with self._op() as conn:
            if self._terms:
                rows = self._word_matches(conn, flt, depth * EVIDENCE_FACTOR)
                if rows:
                    best = rows[0][1]
                    self._keep(found, ((seq, score, keyword_strength(score, best)) for seq, score in rows))
            if self._grams:
                rows = sql.cjk_search(conn, self._grams, flt, depth * EVIDENCE_FACTOR)
                if rows:
                    best = rows[0][1]
                    self._keep(found, ((seq, -float(n), n / best) for seq, n in rows))
            if self._substrings and len(found) < depth:
                self._scanned = True
                self._floor = min((m.strength for m in found.values()), default=1.0)
                rows = sql.cjk_search(conn, self._substrings, flt, depth, indexed=False)
                self._keep(found, ((seq, None, self._substring_strength(n)) for seq, n in rows))
        ranked = sorted(found.values(), key=lambda m: -m.strength)
        self._beyond = {m.key: m for m in ranked[depth:]}
        return ranked[:depth]

    def _word_matches(self, conn: Any, flt: Filter, limit: int) -> list[tuple[int, float]]:
        """BM25 of the word index: in process when the backend keeps a ranking, else in SQL
        (the same numbers either way). A role that may not read the change log (granted
        before schema step 3) keeps ranking in SQL."""
        from psycopg.errors import InsufficientPrivilege

        ranking = self._ranking(conn) if self._ranking is not None else None
        if ranking is not None:
            try:
                return ranking.search(conn, self._terms, limit, flt,
                                      passing=lambda seqs: sql.seqs_passing(conn, flt, seqs),
                                      narrowed=lambda: _few_passing(conn, flt))
            except InsufficientPrivilege:
                ranking.disabled = True
        return sql.keyword_search(conn, self._terms, flt, limit, stats=self._stats)

    def evidence_for(self, keys: Iterable[Key]) -> dict[Key, KeywordMatch]:
        keys = list(keys)
        found = {k: self._beyond[k] for k in keys if k in self._beyond}
        if self._scanned and keys:
            with self._op() as conn:
                rows = sql.cjk_search(conn, self._substrings, Filter(include_expired=True), len(keys),
                                      seqs=[int(k) for k in keys], indexed=False)  # type: ignore[call-overload]
            self._keep(found, ((seq, None, self._substring_strength(n)) for seq, n in rows))
        return found

    def _substring_strength(self, count: int) -> float:
        return self._floor * count / len(self._substrings)

    @staticmethod
    def _keep(found: dict[Key, KeywordMatch], matches: Iterable[tuple[Key, float | None, float]]) -> None:
        for key, score, strength in matches:
            current = found.get(key)
            if current is None or strength > current.strength:
                found[key] = KeywordMatch(key, score, strength)
