"""The backend contract: the operations memstore needs from a database, not SQL.

``MemoryStore`` (the facade) and its collaborators (``capture``, ``recall``, ``exchange``,
``batch_embed``) talk to a :class:`Backend` only. A backend owns its tables, migrations,
full-text index, vector search and any cache of its own (the SQLite backend's usearch/flat
index); it maps its driver's errors to :mod:`memstore.errors` at this boundary.

Rules every backend keeps (``tests/storage/test_contract.py`` checks them on each one):

- **Keys are private.** Recall legs hand out opaque :data:`Key` values (SQLite: the row's
  ``seq``) that callers only give back to the same backend within the same session
  (``memories_for``, ``similarities``, ``evidence_for``); they never leave the store.
- **Filters hold on both legs** (invariant 3): ``keyword_leg(...).search`` and
  ``vector_search`` return only memories passing the :class:`Filter`, however selective.
- **Writes are atomic.** Every mutating call runs inside ``write()`` (one transaction; nested
  calls join it); ``read()`` gives one consistent snapshot for several reads.
- **A version never changes in place**: only its state (forgotten, superseded, updated_at)
  moves; ``supersede`` links old and new in one transaction.
- Vectors are float32 little-endian bytes with the id of the model that made them; a backend
  never compares vectors of different models.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from ..models import Memory, VerifyReport

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "Backend",
    "EmbedJob",
    "Filter",
    "Key",
    "KeywordLeg",
    "KeywordMatch",
    "NewMemory",
    "SYNC_COLUMNS",
    "StateOutcome",
]

#: An opaque row handle, valid within one backend session (see the module docstring).
Key = Hashable
#: The columns of a sync row (:meth:`Backend.sync_rows`, :meth:`Backend.apply_sync`).
SYNC_COLUMNS = (
    "id", "text", "namespace", "tags", "source", "metadata", "project", "branch", "created_at",
    "updated_at", "expires_at", "deleted", "deleted_at", "supersedes", "superseded_by",
)
#: What ``apply_state`` did with a newer exported state.
StateOutcome = Literal["updated", "unchanged", "conflict"]


@dataclass
class Filter:
    """Which memories a recall, list or export may return: typed values, no query language.

    The defaults are what recall sees: live (not forgotten), current (not superseded) and
    unexpired at ``now``. ``metadata`` holds (key, value) pairs that must all match exactly.
    """

    namespaces: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    since: datetime | None = None
    until: datetime | None = None
    projects: tuple[str | None, ...] | None = None
    branch: str | None = None
    source: str | None = None
    metadata: tuple[tuple[str, str], ...] = ()
    authors: tuple[str, ...] = ()
    include_deleted: bool = False
    only_deleted: bool = False
    include_superseded: bool = False
    include_expired: bool = False
    only_expired: bool = False
    now: datetime | None = None

    def is_selective(self) -> bool:
        """True when something beyond the live/current/unexpired defaults narrows the set."""
        return bool(
            self.namespaces or self.tags or self.since or self.until or self.projects is not None
            or self.branch or self.source is not None or self.metadata or self.only_expired
            or self.authors
        )

    def is_default(self) -> bool:
        """True when it asks only for live, current memories unexpired at its ``now``: what a
        derived index's own live state answers without asking the database."""
        return (self.now is not None and not self.is_selective() and not (
            self.include_deleted or self.only_deleted or self.include_superseded or self.include_expired))


@dataclass(frozen=True)
class NewMemory:
    """A memory row ready to store: validated, redacted, hashed (built by ``capture``)."""

    id: str
    text: str
    namespace: str
    tags: tuple[str, ...]
    metadata: dict[str, Any]
    content_hash: str
    created_at: str
    updated_at: str
    source: str | None = None
    project: str | None = None
    branch: str | None = None
    expires_at: str | None = None
    deleted: bool = False
    deleted_at: str | None = None
    supersedes: str | None = None
    superseded_by: str | None = None
    author: str | None = None


@dataclass(frozen=True)
class KeywordMatch:
    """One memory the keyword leg found: its raw score (bm25 in SQLite; None for a
    substring-only match) and its strength in [0, 1] relative to the query's best match."""

    key: Key
    bm25: float | None
    strength: float


@dataclass(frozen=True)
class EmbedJob:
    """A memory whose current text needs a vector."""

    key: Key
    text: str
    content_hash: str


@runtime_checkable
class KeywordLeg(Protocol):
    """The keyword side of one recall (one query)."""

    def search(self, flt: Filter, depth: int) -> list[KeywordMatch]:
        """The ``depth`` strongest matches passing ``flt``, strongest first."""

    def evidence_for(self, keys: Iterable[Key]) -> dict[Key, KeywordMatch]:
        """Keyword evidence for candidates ``search`` did not list (those with none left out)."""


@runtime_checkable
class Backend(Protocol):
    """Storage for one memory store. See the module docstring for the rules."""

    #: Where the store lives, safe to print (no password).
    location: str
    #: A random id fixed when the store was created.
    store_id: str
    #: True when insert() returns the live memory already holding a row's content hash
    #: instead of storing it again (a unique constraint decides), so writers skip a lookup.
    resolves_duplicates: bool

    # -- sessions ----------------------------------------------------------------------------
    def write(self) -> AbstractContextManager[None]:
        """One atomic write transaction (joined by nested calls)."""

    def read(self) -> AbstractContextManager[None]:
        """One consistent read snapshot (joined by nested calls)."""

    def close(self) -> None:
        """Save caches and release connections. Idempotent."""

    # -- memories ----------------------------------------------------------------------------
    def insert(self, row: NewMemory, vector: tuple[str, bytes] | None = None) -> Memory:
        """Store a new version row (with its vector: model id, float32 bytes)."""

    def get(self, memory_id: str) -> Memory | None:
        """The memory with this id, forgotten and superseded ones included."""

    def get_many(self, ids: Sequence[str]) -> dict[str, Memory]:
        """id → memory for those of ``ids`` that exist."""

    def find_live(self, content_hash: str, *, except_id: str | None = None) -> Memory | None:
        """The live, current memory with this content hash (other than ``except_id``)."""

    def list(self, flt: Filter, limit: int, offset: int = 0) -> list[Memory]:
        """Memories passing the filter, newest first."""

    def export_keys(self, flt: Filter | None, *, with_history: bool) -> list[Key]:
        """Keys to export, oldest first: every memory (``flt`` None), or those passing ``flt``
        plus (``with_history``) every version linked to them."""

    def export_rows(self, keys: Sequence[Key], *, with_vectors: bool
                    ) -> Iterator[tuple[Memory, tuple[str, bytes] | None]]:
        """(memory, (model, vector bytes) or None) for ``keys``, in order."""

    def supersede(self, old_id: str, row: NewMemory, vector: tuple[str, bytes] | None) -> Memory:
        """Store ``row`` as the version after ``old_id`` and link both ways, in one transaction."""

    def set_forgotten(self, memory_id: str, forgotten: bool, stamp: str,
                      vector: tuple[str, bytes] | None = None) -> bool:
        """Forget (tombstone) or restore (storing ``vector`` for it); False when it was
        already in that state."""

    def chain(self, memory_id: str) -> list[Memory]:
        """Every version linked to ``memory_id``, oldest first."""

    def purge_plan(self, now: datetime) -> list[tuple[Memory, str]]:
        """(memory, reason) of what a purge deletes, oldest first."""

    def purge(self, now: datetime) -> list[tuple[Memory, str]]:
        """Delete what :meth:`purge_plan` lists, in one transaction: text, index entries and
        vectors, chains reconnected around the gap, none of the text left in free space."""

    def apply_state(self, memory_id: str, values: dict[str, Any]) -> StateOutcome:
        """Take the forgotten/superseded state of a newer exported version (by updated_at)."""

    def insert_exported(self, values: dict[str, Any], vector: tuple[str, bytes] | None) -> None:
        """Insert an export record's column values as they were (ids, links, state)."""

    # -- sync (memstore.sync) ----------------------------------------------------------------
    def sync_rows(self) -> tuple[list[tuple[Any, ...]], tuple[Any, ...]]:
        """Every version as a :data:`SYNC_COLUMNS` row (timestamps as stored) followed by the
        (model, vector bytes) of live current ones (else None, None), and a change mark — all
        read in one snapshot. The mark changes with any capture, update, forget, restore or
        purge, so :meth:`apply_sync` can refuse to overwrite a write made in between; its last
        item is a number that never decreases in the store's life (an older copy of the store
        put back has a lower one, so a sync does not read what it lacks as purges)."""

    def apply_sync(self, rows: Sequence[dict[str, Any]], purged: Sequence[str], *,
                   expect: tuple[Any, ...], progress: Any = None) -> tuple[list[str], tuple[Any, ...]]:
        """Bring the store to a merged sync state in one transaction: delete ``purged`` ids
        for good (as :meth:`purge`: nothing left in free space), insert or overwrite ``rows``
        (``SYNC_COLUMNS`` + ``content_hash``, ``_vector``: (model, bytes) or None). Rows
        leaving the live set are written first, so two live versions never share a text; a
        row whose text is live here under an id outside the rows is kept superseded by that
        one (those ids are returned, with the change mark after the apply). Raises
        StoreChangedError, changing nothing, when the mark moved since ``expect``.
        ``progress(done, total)`` is called inside the transaction."""

    # -- vectors -----------------------------------------------------------------------------
    def put_vectors(self, model: str, items: Sequence[tuple[Key, str, bytes]]) -> None:
        """Store (or replace) vectors: (key, content hash they were made from, bytes)."""

    def vectors_of(self, ids: Sequence[str]) -> dict[str, tuple[str, str, bytes]]:
        """id → (model, content hash, vector bytes) for those that have one."""

    def needing_vectors(self, model: str, *, pending_only: bool = False, force: bool = False,
                        limit: int | None = None) -> list[Key]:
        """Live memories needing a vector: deferred ones (``pending_only``, newest first, at
        most ``limit``), those lacking a current vector of ``model``, or all (``force``)."""

    def embed_jobs(self, keys: Sequence[Key]) -> list[EmbedJob]:
        """The current text of these memories, for embedding."""

    def models(self) -> dict[str, int]:
        """How many live memories each model has embedded."""

    def pending_count(self) -> int:
        """Live memories waiting for their first vector."""

    # -- recall legs -------------------------------------------------------------------------
    def keyword_leg(self, query: str) -> KeywordLeg:
        """The keyword leg for one query."""

    def vector_search(self, query: np.ndarray, flt: Filter, depth: int, *, model: str,
                      required: bool = False) -> list[tuple[Key, float]]:
        """(key, cosine) of the ``depth`` nearest live vectors of ``model`` passing ``flt``,
        best first. ``required``: raise ModelMismatchError when no vector is of ``model``."""

    def similarities(self, query: np.ndarray, keys: Sequence[Key], *, model: str) -> dict[Key, float]:
        """Cosine of the query with each of ``keys`` that has a vector of ``model``."""

    def nearest(self, vector: np.ndarray, flt: Filter, count: int, *, model: str
                ) -> list[tuple[Memory, float]]:
        """The ``count`` memories passing ``flt`` most similar to ``vector`` (near-duplicates)."""

    def memories_for(self, keys: Sequence[Key]) -> dict[Key, Memory]:
        """Memories for keys the legs returned."""

    # -- maintenance -------------------------------------------------------------------------
    def counts(self) -> dict[str, Any]:
        """memories, forgotten, superseded, namespaces (live counts)."""

    def describe(self, model: str, dimension: int) -> dict[str, Any]:
        """Backend facts for ``stats``: index state, sizes, location."""

    def rebuild_index(self, model: str, dimension: int) -> int:
        """Rebuild any derived vector index from the stored vectors; returns its size."""

    def verify(self, *, model: str, dimension: int, quick: bool, repair: bool,
               embed: Any) -> VerifyReport:
        """Check (and with ``repair`` fix) everything derived against the stored memories."""
