"""The derived keyword index: FTS5's bm25 ranking of the word index, without FTS5's cost.

Why: FTS5 computes ``bm25()`` for every row a query matches (the median query matches a
tenth of the store), which was 70–85% of a hybrid recall's CPU. This index holds the same
postings — the tokens FTS5 itself produced, read from the ``fts5vocab`` instance table, and
each row's size from ``%_docsize`` — term-major in memory-mapped numpy arrays, and computes
the very same number: FTS5's bm25 (k1 = 1.2, b = 0.75, IDF ``log((N - n + 0.5) / (n + 0.5))``
floored at 1e-6, every column weight 1) in float64, in FTS5's order of operations, summed
phrase by phrase in query order, ties broken by rowid as ``ORDER BY rank, rowid`` does. Only
the ranking is derived: which rows pass a filter is still asked of SQLite.

It is a cache with the vector index's promises:

- derived from SQLite only, rebuilt whenever it is missing, stale beyond the change log,
  damaged or disagrees with FTS5's own totals (with a notice, by the caller);
- saved atomically under a lock: a new generation file, then ``os.replace`` of the JSON
  that names it (store id, the vector-log op and the highest memory seq it reflects, its
  counts and an xxh3 digest of the file), never over a newer save;
- caught up from SQLite on use: memories are never edited in place (a new version is a new
  row), so what changed since the stamp is the rows above its highest seq (tokenized by an
  in-memory FTS5 table with the same tokenizer) and the rows the change log names that are
  gone (purged);
- checked by ``memstore verify`` against a fresh build, rebuilt by ``verify --repair`` and
  ``reindex``.

FTS5 stays the truth and the fallback: a query whose quoted term FTS5 would split into
several tokens (a phrase), a store whose full-text table was declared differently, or an
index that cannot be trusted, is answered by FTS5. Only the word index (``memories_fts``)
is derived; the CJK trigram index is small and stays with FTS5.
"""

from __future__ import annotations

import contextlib
import json
import math
import mmap
import os
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from . import db
from .files import replace_json

if TYPE_CHECKING:
    import numpy as np


__all__ = ["KeywordIndex", "fts_totals"]

FORMAT = 1
#: The full-text table this index derives from, and the tokenizer it must have been made with.
FTS_TABLE = "memories_fts"
TOKENIZE = "porter unicode61 remove_diacritics 2"
#: FTS5's bm25 constants (ext/fts5/fts5_aux.c).
K1 = 1.2
B = 0.75
IDF_FLOOR = 1e-6
#: load() problem when the saved index reflects commits the caller's snapshot predates
NEWER = "keyword index is newer than the database"
#: Recalls a process makes before it reads every row's live state (a one-shot process would
#: spend more reading it than the SQL filter it saves costs).
LIVE_STATE_AFTER = 3
#: Query terms whose tokens are remembered per process.
TOKEN_CACHE_MAX = 10_000
_ARRAYS = ("doc_seq", "doc_len", "term_hash", "term_start", "term_text_end", "term_text",
           "post_doc", "post_tf")
_DTYPES = {"doc_seq": "<i8", "doc_len": "<i4", "term_hash": "<u8", "term_start": "<i8",
           "term_text_end": "<i8", "term_text": "u1", "post_doc": "<i4", "post_tf": "<i4"}


def _varints(blob: bytes) -> list[int]:
    """The SQLite varints in ``blob`` (FTS5's record format: 7 bits a byte, big-endian, the
    9th byte whole)."""
    out, i, n = [], 0, len(blob)
    while i < n:
        value = 0
        for k in range(9):
            byte = blob[i]
            i += 1
            if k == 8:
                value = (value << 8) | byte
                break
            value = (value << 7) | (byte & 0x7F)
            if byte < 0x80:
                break
        out.append(value)
    return out


def fts_totals(conn: sqlite3.Connection) -> tuple[int, int]:
    """(rows, tokens in all columns) as FTS5's bm25 sees them: its averages record."""
    row = conn.execute(f"SELECT block FROM {FTS_TABLE}_data WHERE id = 1").fetchone()
    if row is None or row[0] is None:
        return 0, 0
    values = _varints(bytes(row[0]))
    return (values[0], sum(values[1:])) if values else (0, 0)


def _max_seq(conn: sqlite3.Connection) -> int:
    """The highest memory seq ever assigned (AUTOINCREMENT: seqs are never reused)."""
    row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'memories'").fetchone()
    return int(row[0]) if row else 0


def _term_hash(term: str) -> int:
    import xxhash

    return xxhash.xxh3_64_intdigest(term.encode("utf-8"))


class _Tokenizer:
    """FTS5's tokens for texts, from a private in-memory FTS5 table declared like the word
    index (so the tokens are FTS5's by construction)."""

    def __init__(self) -> None:
        self._conn = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
        self._conn.execute(f"CREATE VIRTUAL TABLE scratch USING fts5 (text, tags, tokenize = '{TOKENIZE}')")
        self._conn.execute("CREATE VIRTUAL TABLE scratch_instance USING fts5vocab (scratch, instance)")
        self._cache: dict[str, tuple[str, ...]] = {}

    def documents(self, rows: Sequence[tuple[int, str, str]]) -> list[tuple[str, int, int]]:
        """(term, seq, term frequency) of (seq, text, tags) rows."""
        conn = self._conn
        conn.execute("BEGIN")
        try:
            conn.executemany("INSERT INTO scratch (rowid, text, tags) VALUES (?, ?, ?)", rows)
            found = conn.execute(
                "SELECT term, doc, count(*) FROM scratch_instance GROUP BY term, doc"
            ).fetchall()
            conn.execute("DELETE FROM scratch")
        finally:
            conn.execute("COMMIT")
        return found

    def phrase(self, term: str) -> tuple[str, ...]:
        """The tokens FTS5 makes of a quoted query term (usually one)."""
        return self.phrases([term])[0]

    def phrases(self, terms: Sequence[str]) -> list[tuple[str, ...]]:
        """The tokens of each term; those not remembered are tokenized together (one
        transaction for a whole query instead of one per term)."""
        unknown = list(dict.fromkeys(t for t in terms if t not in self._cache))
        if unknown:
            conn = self._conn
            conn.execute("BEGIN")
            try:
                conn.executemany("INSERT INTO scratch (rowid, text) VALUES (?, ?)",
                                 [(i + 1, t) for i, t in enumerate(unknown)])
                rows = conn.execute("SELECT doc, offset, term FROM scratch_instance").fetchall()
                conn.execute("DELETE FROM scratch")
            finally:
                conn.execute("COMMIT")
            found: dict[int, list[tuple[int, str]]] = {}
            for doc, offset, token in rows:
                found.setdefault(int(doc), []).append((int(offset), token))
            if len(self._cache) + len(unknown) > TOKEN_CACHE_MAX:
                self._cache.clear()
            for i, term in enumerate(unknown, start=1):
                self._cache[term] = tuple(t for _, t in sorted(found.get(i, [])))
        return [self._cache[t] for t in terms]


@dataclass(frozen=True)
class KeywordState:
    """What the JSON beside an index file says about it."""

    store_id: str
    position: int
    max_seq: int
    docs: int
    tokens: int
    file: str
    size: int
    digest: str
    offsets: dict[str, tuple[int, int]]


class _Arrays:
    """Term-major postings: terms sorted by xxh3 hash (text alongside, to check a match),
    each term's postings (doc index, term frequency) in doc order; docs sorted by seq."""

    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        self.doc_seq = arrays["doc_seq"]
        self.doc_len = arrays["doc_len"]
        self.term_hash = arrays["term_hash"]
        self.term_start = arrays["term_start"]
        self.term_text_end = arrays["term_text_end"]
        self.term_text = arrays["term_text"]
        self.post_doc = arrays["post_doc"]
        self.post_tf = arrays["post_tf"]

    def as_dict(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in _ARRAYS}

    def find(self, term: str) -> int | None:
        """The term's row, or None."""
        import numpy as np

        key = np.uint64(_term_hash(term))
        row = int(np.searchsorted(self.term_hash, key))
        wanted = term.encode("utf-8")
        while row < len(self.term_hash) and self.term_hash[row] == key:
            start = int(self.term_text_end[row - 1]) if row else 0
            if self.term_text[start : int(self.term_text_end[row])].tobytes() == wanted:
                return row
            row += 1
        return None

    def postings(self, row: int) -> tuple[np.ndarray, np.ndarray]:
        start, end = int(self.term_start[row]), int(self.term_start[row + 1])
        return self.post_doc[start:end], self.post_tf[start:end]

    def terms(self) -> list[str]:
        text = self.term_text.tobytes()
        ends = self.term_text_end.tolist()
        return [text[a:b].decode("utf-8") for a, b in zip([0, *ends[:-1]], ends, strict=True)]


def _assemble(terms: Sequence[str], term_ids: np.ndarray, seqs: np.ndarray, tfs: np.ndarray,
              doc_seq: np.ndarray, doc_len: np.ndarray) -> _Arrays:
    """Arrays from postings given as parallel (term id into ``terms``, seq, tf) arrays."""
    import numpy as np

    hashes = np.fromiter((_term_hash(t) for t in terms), dtype=np.uint64, count=len(terms))
    order = np.array(sorted(range(len(terms)), key=lambda i: (int(hashes[i]), terms[i])), dtype=np.int64)
    rank = np.empty(len(terms), dtype=np.int64)
    rank[order] = np.arange(len(terms), dtype=np.int64)
    tid = rank[term_ids] if len(term_ids) else np.zeros(0, dtype=np.int64)
    docs = np.searchsorted(doc_seq, seqs) if len(seqs) else np.zeros(0, dtype=np.int64)
    by = np.lexsort((docs, tid))
    counts = np.bincount(tid, minlength=len(terms)) if len(tid) else np.zeros(len(terms), dtype=np.int64)
    encoded = [terms[i].encode("utf-8") for i in order.tolist()]
    lengths = np.fromiter((len(e) for e in encoded), dtype=np.int64, count=len(encoded))
    return _Arrays({
        "doc_seq": np.ascontiguousarray(doc_seq, dtype="<i8"),
        "doc_len": np.ascontiguousarray(doc_len, dtype="<i4"),
        "term_hash": np.ascontiguousarray(hashes[order], dtype="<u8"),
        "term_start": np.concatenate([[0], np.cumsum(counts)]).astype("<i8"),
        "term_text_end": np.cumsum(lengths).astype("<i8"),
        "term_text": np.frombuffer(b"".join(encoded), dtype=np.uint8).copy(),
        "post_doc": np.ascontiguousarray(docs[by], dtype="<i4"),
        "post_tf": np.ascontiguousarray(tfs[by], dtype="<i4"),
    })


def _build_from_fts(conn: sqlite3.Connection) -> _Arrays:
    """The arrays of everything the word index holds, read from FTS5's own tables (the caller
    holds the read snapshot)."""
    import numpy as np

    doc_seq, doc_len = [], []
    for seq, blob in conn.execute(f"SELECT id, sz FROM {FTS_TABLE}_docsize ORDER BY id"):
        doc_seq.append(seq)
        doc_len.append(sum(_varints(bytes(blob))))
    conn.execute(
        f"CREATE VIRTUAL TABLE IF NOT EXISTS temp.memstore_{FTS_TABLE}_instance "
        f"USING fts5vocab (main, {FTS_TABLE}, instance)"
    )
    # The instance table (one row per token: term, row, column, offset) comes ordered by
    # term, then row, and says so: GROUP BY term streams it, with no sort.
    rows = conn.execute(
        f"SELECT term, group_concat(doc), count(*) FROM temp.memstore_{FTS_TABLE}_instance GROUP BY term"
    ).fetchall()
    terms = [r[0] for r in rows]
    counts = np.fromiter((r[2] for r in rows), dtype=np.int64, count=len(rows))
    seqs = (np.fromstring(",".join(r[1] for r in rows), dtype=np.int64, sep=",")
            if rows else np.zeros(0, dtype=np.int64))
    term_ids = np.repeat(np.arange(len(terms), dtype=np.int64), counts)
    # one posting per (term, row): runs of equal (term, row) pairs, their length the frequency
    order = np.lexsort((seqs, term_ids))
    term_ids, seqs = term_ids[order], seqs[order]
    if len(seqs):
        differs = (term_ids[1:] != term_ids[:-1]) | (seqs[1:] != seqs[:-1])
        starts = np.flatnonzero(np.concatenate([[True], differs]))
        tfs = np.diff(np.concatenate([starts, [len(seqs)]]))
        term_ids, seqs = term_ids[starts], seqs[starts]
    else:
        tfs = np.zeros(0, dtype=np.int64)
    return _assemble(terms, term_ids, seqs, tfs, np.asarray(doc_seq, dtype=np.int64),
                     np.asarray(doc_len, dtype=np.int64))


def _fts_declared_as_expected(conn: sqlite3.Connection) -> bool:
    row = conn.execute("SELECT sql FROM sqlite_master WHERE name = ?", (FTS_TABLE,)).fetchone()
    return bool(row) and f"tokenize = '{TOKENIZE}'" in row[0] and "text, tags" in row[0]


class KeywordIndex:
    """The derived index of one store's word index, loadable from and savable to disk."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.meta_path = self.directory / "keywords.json"
        self.lock_path = self.directory / "keywords.lock"
        #: vector-log op and highest memory seq this in-memory index reflects (-1: not loaded)
        self.position = -1
        self.max_seq = -1
        #: position of the newest save known to be on disk
        self.saved_position = -1
        self._base: _Arrays | None = None
        self._mmap: mmap.mmap | None = None
        #: base docs removed since (purged rows), as a mask over the base's docs
        self._dead: np.ndarray | None = None
        self._dead_count = 0
        #: memories added since the base: seq → (size, {term: tf})
        self._delta: dict[int, tuple[int, dict[str, int]]] = {}
        self._delta_terms: dict[str, dict[int, int]] = {}
        self._delta_arrays: tuple[np.ndarray, np.ndarray] | None = None  # (seqs, sizes)
        self.docs = 0
        self.tokens = 0
        self._tokenizer: _Tokenizer | None = None
        self._rejected: str | None = None
        #: which rows recall may return without asking SQLite (long-lived processes, see
        #: ``live_state``): seq → expires_at (None: never) of live, current rows
        self._live: dict[int, str | None] | None = None
        self._live_mask: tuple[np.ndarray, np.ndarray] | None = None  # (live, expiring) by row
        self._syncs = 0

    # -- state -------------------------------------------------------------------------------

    @property
    def loaded(self) -> bool:
        return self._base is not None

    @property
    def changes(self) -> int:
        """Memories added or removed since the base was built or loaded."""
        return len(self._delta) + self._dead_count

    def _tok(self) -> _Tokenizer:
        if self._tokenizer is None:
            self._tokenizer = _Tokenizer()
        return self._tokenizer

    def read_state(self) -> KeywordState | None:
        """The on-disk JSON, or None if missing or unreadable."""
        try:
            data = json.loads(self.meta_path.read_text())
            if data.get("format") != FORMAT or data.get("tokenize") != TOKENIZE:
                return None
            offsets = {name: (int(data["arrays"][name][0]), int(data["arrays"][name][1]))
                       for name in _ARRAYS}
            return KeywordState(
                store_id=str(data["store_id"]), position=int(data["position"]),
                max_seq=int(data["max_seq"]), docs=int(data["docs"]), tokens=int(data["tokens"]),
                file=str(data["file"]), size=int(data["size"]), digest=str(data["digest"]),
                offsets=offsets,
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError, IndexError):
            return None

    # -- loading and building --------------------------------------------------------------

    def load(self, store_id: str, floor: int, head: int) -> str | None:
        """Load the saved index if it is usable for this store at log range [floor, head].
        None on success or when there is none; else why the file was not usable."""
        self._reset()
        for _attempt in range(10):
            state = self.read_state()
            if state is None:
                return "keyword index metadata is unreadable" if self.meta_path.exists() else None
            problem = self._load_state(state, store_id, floor, head)
            if problem == "":
                continue  # replaced by a concurrent save between our reads
            self._rejected = state.file if problem is not None else None
            return problem
        return "keyword index file keeps disappearing"

    def _load_state(self, state: KeywordState, store_id: str, floor: int, head: int) -> str | None:
        import numpy as np
        import xxhash

        if state.store_id != store_id:
            return "keyword index belongs to another database"
        if state.position > head:
            return NEWER
        if state.position < floor:
            return "keyword index is older than the change log"
        path = self.directory / state.file
        try:
            with path.open("rb") as fh:
                if os.fstat(fh.fileno()).st_size != state.size or state.size == 0:
                    return f"keyword index file {path.name} is truncated or damaged"
                mapped = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        except FileNotFoundError:
            return ""
        except OSError as exc:
            return f"keyword index file {path.name} is unreadable ({exc})"
        if xxhash.xxh3_64_hexdigest(mapped) != state.digest:
            mapped.close()
            return f"keyword index file {path.name} is damaged (digest mismatch)"
        try:
            arrays = {}
            for name in _ARRAYS:
                offset, count = state.offsets[name]
                arrays[name] = np.frombuffer(mapped, dtype=_DTYPES[name], count=count, offset=offset)
            base = _Arrays(arrays)
        except ValueError as exc:
            mapped.close()
            return f"keyword index file {path.name} does not match its metadata ({exc})"
        problem = _inconsistent(base, state.docs, state.tokens)
        if problem:
            return f"keyword index file {path.name} {problem}"
        self._mmap = mapped
        self._set_base(base)
        self.position = self.saved_position = state.position
        self.max_seq = state.max_seq
        return None

    def _set_base(self, base: _Arrays) -> None:
        self._base = base
        self._dead, self._dead_count = None, 0
        self._delta, self._delta_terms, self._delta_arrays = {}, {}, None
        self.docs = len(base.doc_seq)
        self.tokens = int(base.doc_len.sum(dtype="int64"))

    def _reset(self) -> None:
        self._live, self._live_mask = None, None
        self._base = None
        self.position = self.max_seq = -1
        self._dead, self._dead_count = None, 0
        self._delta, self._delta_terms, self._delta_arrays = {}, {}, None
        self.docs = self.tokens = 0
        if self._mmap is not None:
            with contextlib.suppress(BufferError):  # arrays may still look at it: the GC closes it
                self._mmap.close()
            self._mmap = None

    def rebuild(self, conn: sqlite3.Connection, position: int) -> str | None:
        """Build from FTS5's tables (the caller holds the read snapshot, at log op
        ``position``). None on success, else why the full-text index cannot be derived."""
        self._reset()
        if not _fts_declared_as_expected(conn):
            return f"{FTS_TABLE} is not declared as this index expects"
        base = _build_from_fts(conn)
        rows, tokens = fts_totals(conn)
        problem = _inconsistent(base, rows, tokens)
        if problem:
            return f"the full-text index disagrees with itself ({problem})"
        self._set_base(base)
        self.position, self.max_seq = position, _max_seq(conn)
        self.saved_position = -1
        return None

    def catch_up(self, conn: sqlite3.Connection, touched: Iterable[int], position: int) -> str | None:
        """Take in what changed since the stamp (the caller holds the read snapshot): rows
        above ``max_seq`` and the rows of ``touched`` (log entries) that are gone. None when
        the index then agrees with FTS5's totals, else why not (the caller rebuilds)."""
        assert self._base is not None
        top = _max_seq(conn)
        touched = list(touched)
        gone = self._gone(conn, [s for s in touched if s <= self.max_seq])
        if gone:
            self._remove(gone)
        if top > self.max_seq:
            rows = conn.execute(
                "SELECT seq, text, tags FROM memories WHERE seq > ? ORDER BY seq", (self.max_seq,)
            ).fetchall()
            self._add(rows)
        if self._live is not None:  # forgotten, restored, superseded (the log names them), new
            self._refresh_live(conn, [*touched, *range(self.max_seq + 1, top + 1)])
        self.position, self.max_seq = position, max(top, self.max_seq)
        rows_now, tokens_now = fts_totals(conn)
        if (rows_now, tokens_now) != (self.docs, self.tokens):
            return (f"keyword index holds {self.docs:,} rows / {self.tokens:,} tokens where the "
                    f"full-text index holds {rows_now:,} / {tokens_now:,}")
        return None

    def _gone(self, conn: sqlite3.Connection, seqs: list[int]) -> list[int]:
        if not seqs:
            return []
        present: set[int] = set()
        for start in range(0, len(seqs), 500):
            chunk = seqs[start : start + 500]
            present.update(r[0] for r in conn.execute(
                f"SELECT seq FROM memories WHERE seq IN ({', '.join('?' * len(chunk))})", chunk))
        return [s for s in seqs if s not in present]

    def _add(self, rows: Sequence[tuple[int, str, str]]) -> None:
        found = self._tok().documents(rows)
        for seq, _text, _tags in rows:
            self._delta.setdefault(seq, (0, {}))
        for term, seq, tf in found:
            size, terms = self._delta[seq]
            terms[term] = tf
            self._delta[seq] = (size + tf, terms)
            self._delta_terms.setdefault(term, {})[seq] = tf
        for seq, _text, _tags in rows:
            self.docs += 1
            self.tokens += self._delta[seq][0]
        self._delta_arrays = None

    def _remove(self, seqs: Iterable[int]) -> None:
        import numpy as np

        base = self._base
        assert base is not None
        for seq in seqs:
            entry = self._delta.pop(seq, None)
            if entry is not None:
                size, terms = entry
                for term in terms:
                    postings = self._delta_terms[term]
                    postings.pop(seq, None)
                    if not postings:
                        del self._delta_terms[term]
                self.docs -= 1
                self.tokens -= size
                self._delta_arrays = None
                continue
            row = int(np.searchsorted(base.doc_seq, seq))
            if row < len(base.doc_seq) and int(base.doc_seq[row]) == seq:
                if self._dead is None:
                    self._dead = np.zeros(len(base.doc_seq), dtype=bool)
                if not self._dead[row]:
                    self._dead[row] = True
                    self._dead_count += 1
                    self.docs -= 1
                    self.tokens -= int(base.doc_len[row])

    def sync(self, conn: sqlite3.Connection, store_id: str) -> str | None:
        """Load, catch up or rebuild so the index reflects the database now, then save it if
        enough changed. Returns a one-line notice when the saved index was unusable (and is
        rebuilt) or when the index cannot be derived at all (then ``loaded`` is False and
        FTS5 answers)."""
        notice = None
        if self.loaded:  # the usual case, in one statement (one snapshot): nothing changed
            head, floor, top = conn.execute(
                "SELECT (SELECT seq FROM sqlite_sequence WHERE name = 'vector_log'), "
                "(SELECT min(op) - 1 FROM vector_log), "
                "(SELECT seq FROM sqlite_sequence WHERE name = 'memories')"
            ).fetchone()
            head, top = head or 0, top or 0
            floor = head if floor is None else floor
            if (self.position, self.max_seq) == (head, top) and floor <= head:
                self._syncs += 1
                if self._live is None and self._syncs >= LIVE_STATE_AFTER:
                    with db.snapshot(conn):
                        if (self.position, self.max_seq) == (db.log_head(conn), _max_seq(conn)):
                            self.live_state(conn)
                return None
        for attempt in range(2):
            with db.snapshot(conn):
                head, floor = db.log_head(conn), db.log_floor(conn)
                if not self.loaded:
                    problem = self.load(store_id, floor, head)
                    if problem == NEWER and attempt == 0:
                        continue  # saved by another process after our snapshot began: look again
                    notice = problem
                if self.loaded and not floor <= self.position <= head:
                    self._reset()
                if self.loaded and (self.position, self.max_seq) != (head, _max_seq(conn)):
                    touched = [r[0] for r in conn.execute(
                        "SELECT DISTINCT seq FROM vector_log WHERE op > ?", (self.position,))]
                    problem = self.catch_up(conn, touched, head)
                    if problem:
                        notice = problem
                        self._reset()
                if not self.loaded:
                    problem = self.rebuild(conn, head)
                    if problem:
                        return f"{problem}: keyword recall ranks with FTS5"
                    if notice:
                        notice = f"{notice}; rebuilt it from the database"
            break
        if self.saved_position < 0 or self.changes >= save_threshold(self.docs):
            try:
                self.save(store_id)
            except (OSError, TimeoutError) as exc:  # a cache: not saving it loses nothing
                notice = f"could not save the keyword index ({exc})"
        return notice

    def live_state(self, conn: sqlite3.Connection) -> None:
        """Read which rows are live and current, and when they expire, so a recall with no
        filter beyond those defaults needs no SQL to drop the others (the caller holds the
        snapshot the index reflects). Kept in memory only, caught up with the index."""
        live: dict[int, str | None] = {}
        for seq, expires in conn.execute(
            "SELECT seq, expires_at FROM memories WHERE deleted = 0 AND superseded_by IS NULL"
        ):
            live[seq] = expires
        self._live, self._live_mask = live, None

    def _refresh_live(self, conn: sqlite3.Connection, seqs: Sequence[int]) -> None:
        assert self._live is not None
        seqs = list(dict.fromkeys(seqs))
        for seq in seqs:
            self._live.pop(seq, None)
        for start in range(0, len(seqs), 500):
            chunk = seqs[start : start + 500]
            for seq, expires in conn.execute(
                "SELECT seq, expires_at FROM memories WHERE deleted = 0 AND superseded_by IS NULL "
                f"AND seq IN ({', '.join('?' * len(chunk))})", chunk,
            ):
                self._live[seq] = expires
        self._live_mask = None

    def passing(self, seqs: Iterable[int], live_at: str) -> set[int]:
        """Those of ``seqs`` live, current and unexpired at ``live_at`` (only when
        :attr:`filters_live`): what the default Filter passes."""
        live = self._live
        assert live is not None, "live_state() first"
        found = set()
        for seq in seqs:
            if seq in live:
                expires = live[seq]
                if expires is None or expires > live_at:
                    found.add(seq)
        return found

    @property
    def filters_live(self) -> bool:
        """Whether :meth:`search` can apply the default filter itself (``live_at``)."""
        return self._live is not None

    # -- search ------------------------------------------------------------------------------

    def search(self, terms: Sequence[str], limit: int, live_at: str | None = None
               ) -> list[tuple[int, float]] | None:
        """(seq, bm25) of the best ``limit`` rows matching any of ``terms`` (each a quoted
        FTS5 phrase, OR-ed), ordered as ``ORDER BY bm25, rowid``: exactly what FTS5 answers
        for ``fts_match(terms)``. None when FTS5 must answer (a term that is a phrase).
        ``live_at`` (a database timestamp; only when :attr:`filters_live`) keeps only rows
        live, current and unexpired then — what the default Filter passes."""
        import numpy as np

        base = self._base
        if base is None:
            return None
        phrases = self._tok().phrases([t for t in terms if t])
        if any(len(p) > 1 for p in phrases):
            return None
        if self.docs == 0 or limit <= 0:
            return []
        nbase = len(base.doc_seq)
        delta_seqs, delta_sizes = self._delta_docs()
        seqs = np.concatenate([base.doc_seq, delta_seqs]) if len(delta_seqs) else base.doc_seq
        sizes = np.concatenate([base.doc_len, delta_sizes]) if len(delta_sizes) else base.doc_len
        delta_row = {int(s): nbase + i for i, s in enumerate(delta_seqs.tolist())} if len(delta_seqs) else {}
        score: np.ndarray | None = None
        nrow = self.docs
        avgdl = float(self.tokens) / float(nrow)
        for phrase in phrases:
            if not phrase:
                continue  # a term with no token: matches nothing, adds nothing
            docs, tfs = self._postings(phrase[0], delta_row)
            if len(docs) == 0:
                continue
            hits = len(docs)
            idf = math.log((nrow - hits + 0.5) / (hits + 0.5))
            if idf <= 0.0:
                idf = IDF_FLOOR
            freq = tfs.astype(np.float64)
            length = sizes[docs].astype(np.float64)
            part = idf * ((freq * (K1 + 1.0)) / (freq + K1 * (1 - B + B * length / avgdl)))
            if score is None:
                score = np.zeros(len(seqs), dtype=np.float64)
                touched = np.zeros(len(seqs), dtype=bool)
            score[docs] += part
            touched[docs] = True
        if score is None:
            return []
        matched = np.flatnonzero(touched)  # (a byte a row: faster to scan than the scores)
        if live_at is not None:
            matched = matched[self._passing(seqs, matched, live_at)]
        rank = -score[matched]
        if len(matched) > limit:
            kth = np.partition(rank, limit - 1)[limit - 1]
            keep = rank <= kth
            matched, rank = matched[keep], rank[keep]
        order = np.lexsort((seqs[matched], rank))[:limit]
        return [(int(s), float(r)) for s, r in zip(seqs[matched[order]].tolist(), rank[order].tolist(),
                                                     strict=True)]

    def _postings(self, term: str, delta_row: dict[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """(row, tf) of the live rows holding ``term``: the base's not removed, then the delta's."""
        import numpy as np

        base = self._base
        assert base is not None
        row = base.find(term)
        if row is None:
            docs, tfs = np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.int32)
        else:
            docs, tfs = base.postings(row)
            if self._dead_count:
                assert self._dead is not None
                live = ~self._dead[docs]
                docs, tfs = docs[live], tfs[live]
        extra = self._delta_terms.get(term)
        if extra:
            docs = np.concatenate([docs, np.fromiter((delta_row[s] for s in extra), dtype=np.int64)])
            tfs = np.concatenate([tfs, np.fromiter(extra.values(), dtype=np.int64)])
        return docs, tfs

    def _passing(self, seqs: np.ndarray, matched: np.ndarray, live_at: str) -> np.ndarray:
        """Mask over ``matched`` of the rows live, current and unexpired at ``live_at``."""
        import numpy as np

        live = self._live
        assert live is not None, "live_state() first"
        if self._live_mask is None or len(self._live_mask[0]) != len(seqs):
            listed = seqs.tolist()
            self._live_mask = (
                np.fromiter((s in live for s in listed), dtype=bool, count=len(listed)),
                np.fromiter((live.get(s) is not None for s in listed), dtype=bool, count=len(listed)),
            )
        alive, expiring = self._live_mask
        keep = alive[matched]
        for i in np.flatnonzero(keep & expiring[matched]).tolist():  # the few with an expiry
            expires = live[int(seqs[matched[i]])]
            if expires is not None and not expires > live_at:
                keep[i] = False
        return keep

    def _delta_docs(self) -> tuple[np.ndarray, np.ndarray]:
        import numpy as np

        if self._delta_arrays is None:
            self._live_mask = None  # rows renumbered
            seqs = sorted(self._delta)
            self._delta_arrays = (np.asarray(seqs, dtype=np.int64),
                                  np.asarray([self._delta[s][0] for s in seqs], dtype=np.int64))
        return self._delta_arrays

    # -- saving ------------------------------------------------------------------------------

    def merged(self) -> _Arrays:
        """The base with the changes since folded in (the arrays a fresh build would give)."""
        import numpy as np

        base = self._base
        assert base is not None
        if not self.changes:
            return base
        keep = ~self._dead if self._dead is not None else np.ones(len(base.doc_seq), dtype=bool)
        delta_seqs, delta_sizes = self._delta_docs()
        doc_seq = np.concatenate([base.doc_seq[keep], delta_seqs])
        doc_len = np.concatenate([base.doc_len[keep].astype(np.int64), delta_sizes])
        order = np.argsort(doc_seq, kind="stable")
        doc_seq, doc_len = doc_seq[order], doc_len[order]
        terms = base.terms()
        index = {t: i for i, t in enumerate(terms)}
        counts = np.diff(base.term_start)
        term_ids = np.repeat(np.arange(len(terms), dtype=np.int64), counts)
        live = keep[base.post_doc]
        term_ids = term_ids[live]
        seqs = base.doc_seq[base.post_doc[live]]
        tfs = base.post_tf[live].astype(np.int64)
        extra_ids, extra_seqs, extra_tfs = [], [], []
        for term, postings in self._delta_terms.items():
            tid = index.get(term)
            if tid is None:
                tid = index[term] = len(terms)
                terms.append(term)
            for seq, tf in postings.items():
                extra_ids.append(tid)
                extra_seqs.append(seq)
                extra_tfs.append(tf)
        term_ids = np.concatenate([term_ids, np.asarray(extra_ids, dtype=np.int64)])
        seqs = np.concatenate([seqs, np.asarray(extra_seqs, dtype=np.int64)])
        tfs = np.concatenate([tfs, np.asarray(extra_tfs, dtype=np.int64)])
        # terms left with no posting (all their rows purged) are dropped, as a build would
        used = np.zeros(len(terms), dtype=bool)
        used[term_ids] = True
        if not used.all():
            remap = np.cumsum(used) - 1
            term_ids = remap[term_ids]
            terms = [t for t, u in zip(terms, used.tolist(), strict=True) if u]
        return _assemble(terms, term_ids, seqs, tfs, doc_seq, doc_len)

    def save(self, store_id: str, *, force: bool = False) -> bool:
        """Write this index as the current generation unless disk already holds a newer one
        (or, without ``force``, one as new). True when a file was written."""
        if self._base is None:
            return False
        import numpy as np
        import xxhash
        from filelock import FileLock

        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        with FileLock(str(self.lock_path), timeout=120, mode=0o600):
            state = self.read_state()
            mine = (self.position, self.max_seq)
            if (
                state is not None
                and state.file != self._rejected
                and state.store_id == store_id
                and ((state.position, state.max_seq) > mine
                     or ((state.position, state.max_seq) == mine and not force))
                and (self.directory / state.file).exists()
            ):
                self.saved_position = state.position
                return False
            arrays = self.merged().as_dict()
            name = f"keywords-{os.urandom(6).hex()}.bin"
            path = self.directory / name
            offsets: dict[str, list[int]] = {}
            digest = xxhash.xxh3_64()
            old_umask = os.umask(0o077)
            try:
                with path.open("wb") as fh:
                    at = 0
                    for key in _ARRAYS:
                        data = np.ascontiguousarray(arrays[key], dtype=_DTYPES[key])
                        pad = (-at) % 8
                        if pad:
                            fh.write(b"\0" * pad)
                            digest.update(b"\0" * pad)
                            at += pad
                        offsets[key] = [at, len(data)]
                        raw = memoryview(data.reshape(-1)).cast("B") if data.size else b""
                        fh.write(raw)
                        digest.update(raw)
                        at += data.nbytes
                    if at == 0:
                        fh.write(b"\0" * 8)
                        digest.update(b"\0" * 8)
                    fh.flush()
                    os.fsync(fh.fileno())
                meta = {
                    "format": FORMAT, "tokenize": TOKENIZE, "store_id": store_id,
                    "position": self.position, "max_seq": self.max_seq,
                    "docs": self.docs, "tokens": self.tokens, "file": name,
                    "size": path.stat().st_size, "digest": digest.hexdigest(), "arrays": offsets,
                }
                replace_json(self.meta_path, meta)
            finally:
                os.umask(old_umask)
            self.saved_position = self.position
            self._rejected = None
            for old in self.directory.glob("keywords-*.bin"):
                if old.name != name:
                    old.unlink(missing_ok=True)
            for old in self.directory.glob("keywords.json.*.tmp"):
                old.unlink(missing_ok=True)
            return True

    def save_if_moved(self, store_id: str) -> None:
        """On close: save when enough changed since the last save (best effort)."""
        if self.loaded and self.changes >= save_threshold(self.docs):
            with contextlib.suppress(OSError, TimeoutError):
                self.save(store_id)

    def delete_files(self) -> None:
        """Remove the saved index (it is only a cache)."""
        from filelock import FileLock

        if not self.directory.exists():
            return
        with FileLock(str(self.lock_path), timeout=120, mode=0o600):
            self.meta_path.unlink(missing_ok=True)
            for old in self.directory.glob("keywords-*.bin"):
                old.unlink(missing_ok=True)

    # -- verify ------------------------------------------------------------------------------

    def differences(self, conn: sqlite3.Connection) -> list[str]:
        """How this (caught-up) index differs from a fresh build from FTS5's tables, in the
        caller's read snapshot; empty when identical."""
        import numpy as np

        fresh = KeywordIndex(self.directory)
        problem = fresh.rebuild(conn, self.position)
        if problem:
            return [problem]
        mine, theirs = self.merged().as_dict(), fresh.merged().as_dict()
        problems = []
        for name in _ARRAYS:
            if mine[name].shape != theirs[name].shape or not np.array_equal(mine[name], theirs[name]):
                problems.append(f"keyword index array {name} differs from the full-text index")
        return problems


def save_threshold(docs: int) -> int:
    """Changes to hold beside a saved index before saving folds them in (each fresh process
    tokenizes them again; a save rewrites the whole file)."""
    return max(32, docs // 500)


def _inconsistent(base: _Arrays, docs: int, tokens: int) -> str | None:
    """Why the arrays cannot be right (sizes and ranges), or None."""
    import numpy as np

    nterms, nposts, ndocs = len(base.term_hash), len(base.post_doc), len(base.doc_seq)
    if ndocs != docs or int(base.doc_len.sum(dtype="int64")) != tokens:
        return "does not match its row and token counts"
    if len(base.doc_len) != ndocs or len(base.term_start) != nterms + 1 or len(base.post_tf) != nposts:
        return "has arrays of inconsistent lengths"
    if len(base.term_text_end) != nterms or (nterms and int(base.term_text_end[-1]) != len(base.term_text)):
        return "has a damaged term table"
    starts = base.term_start
    if int(starts[0]) != 0 or int(starts[-1]) != nposts or np.any(np.diff(starts) < 0):
        return "has damaged term offsets"
    if nposts and (int(base.post_doc.min()) < 0 or int(base.post_doc.max()) >= ndocs
                   or int(base.post_tf.min()) < 1):
        return "has postings out of range"
    if ndocs > 1 and np.any(np.diff(base.doc_seq) <= 0):
        return "has rows out of order"
    return None

