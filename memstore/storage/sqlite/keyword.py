"""The keyword leg of recall: which memories match the query's words, and how strongly.

Three sources, one answer. The word index (``memories_fts``: porter stemming, unicode61,
diacritics folded) serves every query. A query with Chinese, Japanese or Korean characters
also searches the trigram index (``memories_cjk``) and, for what trigrams cannot match
(1–2 character words, text whose 3-character windows differ from the query's), looks for
the query's CJK bigrams as substrings. Each memory's *strength* is its bm25 relative to the
best bm25 of the same index for this query (in [0, 1]); a memory found in several sources
keeps its strongest. Substring-only matches rank below every indexed match.

The word index's ranking may come from the derived keyword index (``keyword_index.py``),
which gives FTS5's own bm25 and order at a fraction of the cost; FTS5 answers whatever it
cannot.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from ...timeutil import format_ts
from ..base import Filter, KeywordMatch
from ..terms import (
    EVIDENCE_FACTOR,
    cjk_grams,
    cjk_substrings,
    has_cjk,
    keyword_strength,
    keyword_terms,
)
from . import db

if TYPE_CHECKING:
    from .keyword_index import KeywordIndex

__all__ = ["KeywordLeg", "cjk_match", "fts_match"]

# User text never reaches FTS5 as syntax: each token is double-quoted (so ``AND``, ``NEAR``,
# ``*``, ``:``, ``^`` and parentheses are just words), and the tokens are OR-ed so bm25
# ranks by how many and how rare the matched words are.


def _quote(term: str) -> str:
    return '"' + term.replace('"', '""') + '"'


def fts_match(terms: Sequence[str]) -> str | None:
    """An FTS5 MATCH expression OR-ing the quoted terms; None when there is nothing to match."""
    quoted = [_quote(term) for term in terms if term]
    return " OR ".join(quoted) if quoted else None


def cjk_match(query: str) -> str | None:
    """A MATCH expression for the trigram index (``terms.cjk_grams``); None when the query
    has no CJK run long enough."""
    return fts_match(cjk_grams(query))


class KeywordLeg:
    """The keyword side of one recall: ``search`` for the ranked list, ``evidence_for`` to
    score memories the vector leg found (so fusion knows both legs' evidence for every
    candidate)."""

    def __init__(self, conn: sqlite3.Connection, query: str, words: KeywordIndex | None = None) -> None:
        self._conn = conn
        self._words = words
        self._terms = keyword_terms(query)
        self._matches: list[tuple[str, str]] = []
        words = fts_match(self._terms)
        if words is not None:
            self._matches.append(("memories_fts", words))
        self._substrings: list[str] = []
        if has_cjk(query):
            trigrams = cjk_match(query)
            if trigrams is not None:
                self._matches.append(("memories_cjk", trigrams))
            self._substrings = cjk_substrings(query)
        self._beyond: dict[int, tuple[float | None, float]] = {}
        self._scanned = False
        self._floor = 1.0

    def search(self, flt: Filter, depth: int) -> list[KeywordMatch]:
        """The ``depth`` strongest matches passing ``flt``, strongest first.

        Reads ``EVIDENCE_FACTOR × depth`` matches per index (ranking costs FTS5 the same
        either way) and keeps those beyond ``depth`` as evidence for ``evidence_for``
        (as plain pairs: most are never asked for)."""
        found: dict[int, tuple[float | None, float]] = {}
        for index, match in self._matches:
            derived = index == "memories_fts" and self._words is not None
            rows = db.keyword_search(self._conn, match, flt, depth * EVIDENCE_FACTOR, index=index,
                                     ranked=self._word_ranking if derived else None)
            if rows:
                best = rows[0][1]
                self._keep(found, ((seq, bm25, keyword_strength(bm25, best)) for seq, bm25 in rows))
        if self._substrings and len(found) < depth:
            self._scanned = True
            self._floor = min((strength for _, strength in found.values()), default=1.0)
            rows = db.substring_search(self._conn, self._substrings, flt, depth)
            self._keep(found, ((seq, None, self._substring_strength(n)) for seq, n in rows))
        ranked = sorted(found.items(), key=lambda item: -item[1][1])
        self._beyond = dict(ranked[depth:])
        return [KeywordMatch(seq, bm25, strength) for seq, (bm25, strength) in ranked[:depth]]

    def evidence_for(self, seqs: Iterable[int]) -> dict[int, KeywordMatch]:
        """Keyword evidence for memories ``search`` did not list: matches it read beyond
        ``depth``, and CJK substring matches. Memories with neither are left out (a match
        weaker than every match read is treated as none: measured to change nothing)."""
        seqs = list(seqs)
        beyond = self._beyond
        found = {seq: beyond[seq] for seq in seqs if seq in beyond}
        if self._scanned and seqs:
            rows = db.substring_search(self._conn, self._substrings, Filter(), len(seqs), seqs=seqs)
            self._keep(found, ((seq, None, self._substring_strength(n)) for seq, n in rows))
        return {seq: KeywordMatch(seq, bm25, strength) for seq, (bm25, strength) in found.items()}

    def _word_ranking(self, count: int, flt: Filter) -> tuple[list[tuple[int, float]], bool] | None:
        """The derived index's ranking; with the default filter applied by the index itself
        where it holds the rows' live state (a long-lived process)."""
        words = self._words
        assert words is not None
        default = words.filters_live and flt.is_default()
        rows = words.search(self._terms, count, format_ts(flt.now) if default and flt.now else None)
        return None if rows is None else (rows, default)

    def _substring_strength(self, count: int) -> float:
        """Share of the query's CJK substrings found, scaled below the weakest indexed match."""
        return self._floor * count / len(self._substrings)

    @staticmethod
    def _keep(found: dict[int, tuple[float | None, float]],
              matches: Iterable[tuple[int, float | None, float]]) -> None:
        for seq, bm25, strength in matches:
            current = found.get(seq)
            if current is None or strength > current[1]:
                found[seq] = (bm25, strength)
