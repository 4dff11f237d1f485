"""The keyword leg's BM25 computed in this process: the tsvector postings of the live
memories, term-major in numpy arrays, caught up from the change log (schema m003).

Why: ranking in SQL (``sql.keyword_search``) reads every matching row's tsvector and scores
it in the executor; the median query matches a tenth of the store, so at 100k memories
that was 125 ms of a 202 ms hybrid recall, and a postings table ranked in SQL was still
~35 ms (the executor costs microseconds a row). Here the same BM25 is a few numpy
operations over the query's postings.

It is a cache of the database, never the truth:

- built from the rows themselves in one snapshot: each live memory's lexemes
  (``tsvector_to_array``), their counts of positions (tf) and ``doc_len`` — the numbers
  ``sql.keyword_search`` reads, so the scores are the same BM25 (FTS5's k1/b, IDF over the
  live memories, compared in tests);
- caught up before every use: one statement reads the change counter and, when it moved,
  the current state of every memory the log names since the ranking's number (a memory is
  removed and added again; gone or no longer live ones only removed). A ranking older than
  the log's floor, or newer than the database (a restored copy), is rebuilt;
- which memories pass a filter (and are still live) is asked of PostgreSQL, for the ranked
  candidates only;
- kept only in memory, by processes that keep a store open and recall more than once
  (``BUILD_AFTER``; the MCP server, the web page, scripts) and for stores up to
  ``MAX_MEMORIES``: a one-shot CLI recall uses SQL, whose cost is small next to starting
  the process. Building takes about a second per 20k memories on this project's 2-core host.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from .schema import TEXT_CONFIG

if TYPE_CHECKING:
    import numpy as np
    import psycopg

    from ..base import Filter

__all__ = ["BUILD_AFTER", "MAX_MEMORIES", "KeywordRanking"]

#: Keyword searches a backend makes before it builds the ranking (the first uses SQL).
BUILD_AFTER = 2
#: Live memories above which no ranking is built (memory: ~10 bytes a posting, ~32
#: postings a memory; build time) and SQL ranks instead.
MAX_MEMORIES = 500_000
#: Dead slots (memories removed since the build) tolerated beyond the live ones before a
#: catch-up rebuilds instead.
REBUILD_SLACK = 10_000
#: FTS5's bm25 constants, as sql.keyword_search uses them.
K1 = 1.2
B = 0.75
_LIVE = "NOT m.deleted AND m.superseded_by IS NULL"
_DOC = ("m.doc_len, coalesce(extract(epoch FROM m.expires_at)::float8, 'Infinity'), "
        "tsvector_to_array(m.tsv), "
        "ARRAY(SELECT coalesce(array_length(u.positions, 1), 1) FROM unnest(m.tsv) u)")
_LEXEMES = (f"SELECT DISTINCT lexeme FROM unnest(%(words)s::text[]) w, "
            f"unnest(tsvector_to_array(to_tsvector('{TEXT_CONFIG}', w))) AS lexeme")
#: The counter, the log's floor, the query words' lexemes (when asked) and the current state
#: of every memory the log names since %(mark)s: one round trip per search.
_CATCH_UP = f"""
    WITH c AS (SELECT n, log_floor FROM memstore_changes)
    SELECT c.n, c.log_floor, CASE WHEN %(words)s::text[] IS NULL THEN NULL ELSE ARRAY({_LEXEMES}) END,
           t.seq, (m.seq IS NOT NULL AND {_LIVE}) AS live, {_DOC}
    FROM c
    LEFT JOIN LATERAL (SELECT DISTINCT l.seq FROM memstore_change_log l
                       WHERE l.n > %(mark)s AND l.n <= c.n AND c.n > %(mark)s) t ON true
    LEFT JOIN memories m ON m.seq = t.seq
"""


class _Docs:
    """Growable per-memory arrays (seq, length, expiry as epoch seconds, live) and the
    seq → slot map."""

    def __init__(self, np: Any, seqs: Sequence[int], lengths: Sequence[int],
                 expires: Sequence[float]) -> None:
        self._np = np
        n = len(seqs)
        cap = max(1024, n + n // 4)
        self.seq = np.zeros(cap, dtype=np.int64)
        self.length = np.zeros(cap, dtype=np.float64)
        self.expires = np.zeros(cap, dtype=np.float64)
        self.alive = np.zeros(cap, dtype=bool)
        self.seq[:n] = seqs
        self.length[:n] = lengths
        self.expires[:n] = expires
        self.alive[:n] = True
        self.count = n
        self.slot = {int(s): i for i, s in enumerate(seqs)}
        self.live = n
        self.total = float(sum(lengths))

    def add(self, seq: int, length: int, expires: float) -> int:
        np = self._np
        if self.count == len(self.seq):
            cap = 2 * len(self.seq)
            for name in ("seq", "length", "expires", "alive"):
                old = getattr(self, name)
                new = np.zeros(cap, dtype=old.dtype)
                new[: self.count] = old[: self.count]
                setattr(self, name, new)
        i = self.count
        self.count += 1
        self.seq[i], self.length[i], self.expires[i], self.alive[i] = seq, length, expires, True
        self.slot[seq] = i
        self.live += 1
        self.total += length
        return i

    def remove(self, seq: int) -> None:
        i = self.slot.pop(seq, None)
        if i is None:
            return
        self.alive[i] = False
        self.live -= 1
        self.total -= float(self.length[i])


class KeywordRanking:
    """BM25 over one team store's live memories, in memory (see the module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.RLock()  # one catch-up or build at a time; ranks read a stable state
        self.mark: int | None = None  # the change number the ranking reflects
        self.rebuilds = 0
        self.disabled = False  # set when this role may not read what the ranking needs
        self._docs: _Docs | None = None
        self._terms: dict[str, int] = {}
        self._post: list[tuple[np.ndarray, np.ndarray]] = []  # term id -> (slots, tf)
        self._pending: dict[int, tuple[list[int], list[int]]] = {}  # additions not merged yet
        self._lexemes: dict[tuple[str, ...], list[str]] = {}

    @property
    def ready(self) -> bool:
        return self._docs is not None

    @property
    def size(self) -> int:
        return self._docs.live if self._docs is not None else 0

    # -- keeping up with the database --------------------------------------------------------

    def build(self, conn: psycopg.Connection) -> None:
        """Read every live memory's postings in one snapshot."""
        with self._lock:
            self._build(conn)

    def _build(self, conn: psycopg.Connection) -> None:
        import numpy as np

        with conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            row = conn.execute("SELECT n FROM memstore_changes").fetchone()
            mark = int(row[0]) if row else 0
            rows = conn.execute(f"SELECT m.seq, {_DOC} FROM memories m WHERE {_LIVE}").fetchall()
        terms: dict[str, int] = {}
        term_of: list[int] = []
        slot_of: list[int] = []
        tfs: list[int] = []
        for slot, (_, _, _, lexemes, counts) in enumerate(rows):
            for lexeme in lexemes:
                term = terms.get(lexeme)
                if term is None:
                    term = terms[lexeme] = len(terms)
                term_of.append(term)
            slot_of.extend([slot] * len(lexemes))
            tfs.extend(counts)
        term_arr = np.asarray(term_of, dtype=np.int32)
        order = np.argsort(term_arr, kind="stable")
        slots = np.asarray(slot_of, dtype=np.int32)[order]
        tf = np.asarray(tfs, dtype=np.int32)[order]
        bounds = np.searchsorted(term_arr[order], np.arange(len(terms) + 1))
        post = [(slots[bounds[t]:bounds[t + 1]], tf[bounds[t]:bounds[t + 1]]) for t in range(len(terms))]
        self._docs = _Docs(np, [int(r[0]) for r in rows], [int(r[1]) for r in rows],
                           [float(r[2]) for r in rows])
        self._terms, self._post, self._pending = terms, post, {}
        self.mark = mark
        self.rebuilds += 1

    def catch_up(self, conn: psycopg.Connection, words: Sequence[str] | None = None) -> list[str] | None:
        """Apply what the change log names since ``mark`` (rebuild when it cannot); returns
        the lexemes of ``words`` when given (read in the same round trip)."""
        with self._lock:
            return self._catch_up(conn, words)

    def _catch_up(self, conn: psycopg.Connection, words: Sequence[str] | None) -> list[str] | None:
        if self._docs is None or self.mark is None:
            self._build(conn)
        rows = conn.execute(_CATCH_UP, {"mark": self.mark, "words": list(words) if words else None}
                            ).fetchall()
        if not rows:  # no counter row: not a memstore schema any more
            self._build(conn)
            return None
        mark, floor, asked = int(rows[0][0]), int(rows[0][1]), rows[0][2]
        if mark == self.mark:
            return asked
        docs = self._docs
        if mark < self.mark or self.mark < floor or docs.count > 2 * docs.live + REBUILD_SLACK:
            self._build(conn)  # a restored older copy, the log moved on, or mostly dead slots
            return asked
        for _, _, _, seq, live, length, expires, lexemes, counts in rows:
            if seq is None:
                continue
            docs.remove(int(seq))
            if live:
                slot = docs.add(int(seq), int(length), float(expires))
                for lexeme, count in zip(lexemes, counts, strict=True):
                    term = self._terms.get(lexeme)
                    if term is None:
                        term = self._terms[lexeme] = len(self._post)
                        self._post.append(_empty())
                    pending = self._pending.setdefault(term, ([], []))
                    pending[0].append(slot)
                    pending[1].append(int(count))
        self.mark = mark
        return asked

    # -- ranking ---------------------------------------------------------------------------

    def _lexemes_of(self, conn: psycopg.Connection, words: Sequence[str]) -> list[str]:
        """Catch up, and the index's lexemes for the query words (PostgreSQL's stemming;
        remembered per process)."""
        key = tuple(words)
        found = self._lexemes.get(key)
        if found is not None:
            self.catch_up(conn)
            return found
        found = list(self.catch_up(conn, words) or [])
        if len(self._lexemes) > 10_000:
            self._lexemes.clear()
        self._lexemes[key] = found
        return found

    def rank(self, lexemes: Sequence[str], unexpired_at: float | None = None
             ) -> tuple[np.ndarray, np.ndarray]:
        """(seqs, scores) of every live memory holding any lexeme (and unexpired at epoch
        ``unexpired_at`` when given: expired ones still count in the IDF, as in SQL), unordered."""
        import numpy as np

        with self._lock:
            docs = self._docs
            assert docs is not None
            n = max(float(docs.live), 1.0)
            avgdl = max(docs.total / n if docs.live else 0.0, 1.0)
            scores = np.zeros(docs.count, dtype=np.float64)
            touched = np.zeros(docs.count, dtype=bool)
            for lexeme in dict.fromkeys(lexemes):
                term = self._terms.get(lexeme)
                if term is None:
                    continue
                slots, tf = self._postings(np, term)
                keep = docs.alive[slots]
                slots, tf = slots[keep], tf[keep].astype(np.float64)
                if not len(slots):
                    continue
                df = float(len(slots))
                idf = np.log(1 + (n - df + 0.5) / (df + 0.5))
                scores[slots] += idf * tf * (K1 + 1) / (tf + K1 * (1 - B + B * docs.length[slots] / avgdl))
                touched[slots] = True
            matched = np.flatnonzero(touched)  # (a byte a memory: faster to scan than the scores)
            if unexpired_at is not None:
                matched = matched[docs.expires[matched] > unexpired_at]
            return docs.seq[matched], scores[matched]

    @staticmethod
    def best(seqs: np.ndarray, scores: np.ndarray, count: int) -> np.ndarray:
        """Positions of the ``count`` best (and any tied with the last), ordered as
        ``ORDER BY score DESC, seq DESC``."""
        import numpy as np

        if count < len(scores):
            cut = np.partition(scores, len(scores) - count)[len(scores) - count]
            top = np.flatnonzero(scores >= cut)
        else:
            top = np.arange(len(scores))
        return top[np.lexsort((-seqs[top], -scores[top]))]

    def _postings(self, np: Any, term: int) -> tuple[np.ndarray, np.ndarray]:
        slots, tf = self._post[term]
        pending = self._pending.pop(term, None)
        if pending is not None:
            slots = np.concatenate([slots, np.asarray(pending[0], dtype=np.int32)])
            tf = np.concatenate([tf, np.asarray(pending[1], dtype=np.int32)])
            self._post[term] = (slots, tf)
        return slots, tf

    def search(self, conn: psycopg.Connection, words: Sequence[str], limit: int, flt: Filter, *,
               passing: Callable[[list[int]], set[int]],
               narrowed: Callable[[], list[int] | None]) -> list[tuple[int, float]]:
        """(seq, negated score) of the ``limit`` best memories passing ``flt``, as
        ``sql.keyword_search`` returns them. A filter asking only for live, unexpired
        memories is answered here; a selective one by the memories it passes when
        ``narrowed`` lists them (few enough); any other asks ``passing`` about the ranked
        candidates, more of them each round until ``limit`` pass."""
        import numpy as np

        lexemes = self._lexemes_of(conn, words)
        plain = flt.is_default()
        at = flt.now.timestamp() if plain and flt.now is not None else None
        seqs, scores = self.rank(lexemes, at)
        if not plain and flt.is_selective() and len(seqs):
            allowed = narrowed()
            if allowed is not None:
                keep = np.isin(seqs, np.asarray(allowed, dtype=np.int64))
                seqs, scores = seqs[keep], scores[keep]
                plain = True
        out: list[tuple[int, float]] = []
        done, want = 0, limit + limit // 4 + 16
        while done < len(seqs) and len(out) < limit:
            order = self.best(seqs, scores, want)
            batch = [int(s) for s in seqs[order[done:]]]
            kept = set(batch) if plain else passing(batch)
            for i, seq in zip(order[done:], batch, strict=True):
                if seq in kept:
                    out.append((seq, -float(scores[i])))
                    if len(out) >= limit:
                        break
            done, want = len(order), want * 4
        return out


def _empty() -> tuple[np.ndarray, np.ndarray]:
    import numpy as np

    return np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.int32)
