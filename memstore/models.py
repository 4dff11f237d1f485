"""Plain data returned by the store: a Memory, a recall Hit. No I/O here."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

__all__ = [
    "CaptureResult", "Check", "Hit", "ImportResult", "Memory", "PurgeResult", "PurgedMemory", "VerifyReport",
    "history_to_dicts", "memory_status",
]


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


@dataclass(frozen=True)
class Memory:
    """One stored memory, as it is in the database."""

    id: str
    text: str
    namespace: str
    tags: tuple[str, ...]
    source: str | None
    metadata: dict[str, Any]
    content_hash: str
    created_at: datetime
    updated_at: datetime
    project: str | None = None
    branch: str | None = None
    expires_at: datetime | None = None
    deleted: bool = False
    supersedes: str | None = None
    superseded_by: str | None = None
    deleted_at: datetime | None = None
    #: Who captured it (team stores record it: the user.name setting, git user.email or OS user).
    author: str | None = None

    @property
    def is_current(self) -> bool:
        """Not superseded by a newer version (it may still be forgotten or expired)."""
        return self.superseded_by is None

    def expired(self, at: datetime) -> bool:
        """True when the memory has an expiry time at or before ``at``."""
        return self.expires_at is not None and self.expires_at <= at

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (timestamps as ISO 8601 UTC strings)."""
        return {
            "id": self.id,
            "text": self.text,
            "namespace": self.namespace,
            "tags": list(self.tags),
            "source": self.source,
            "metadata": self.metadata,
            "content_hash": self.content_hash,
            "created_at": _iso(self.created_at),
            "updated_at": _iso(self.updated_at),
            "project": self.project,
            "branch": self.branch,
            "expires_at": _iso(self.expires_at),
            "deleted": self.deleted,
            "supersedes": self.supersedes,
            "superseded_by": self.superseded_by,
            "deleted_at": _iso(self.deleted_at),
            **({"author": self.author} if self.author is not None else {}),
        }


@dataclass(frozen=True)
class CaptureResult(Memory):
    """The memory a capture returned, and what the capture did.

    ``created`` is False when identical text was already stored in the same
    scope and the existing memory was returned instead — or, with
    ``near_duplicate_of`` set, when a memory saying nearly the same thing (cosine
    ``similarity`` at or above the near-duplicate threshold) was returned instead.
    ``redacted`` lists the kind of each secret replaced by a ``[REDACTED:<kind>]``
    marker before storing.

    ``stored`` says whether the given text is in the store after the call: False only
    for a near-duplicate refusal (``reason`` is then ``"near-duplicate"``); an exact
    duplicate is already stored, so it is ``stored`` with ``created`` False.
    """

    created: bool = True
    notices: tuple[str, ...] = field(default=())
    near_duplicate_of: str | None = None
    similarity: float | None = None
    redacted: tuple[str, ...] = field(default=())

    @property
    def stored(self) -> bool:
        """False when nothing was stored because a near-duplicate is live."""
        return self.near_duplicate_of is None

    @property
    def reason(self) -> str | None:
        """Why the text was not stored (``"near-duplicate"``), or None when it is stored."""
        return None if self.stored else "near-duplicate"

    def to_dict(self) -> dict[str, Any]:
        data = super().to_dict()
        data["stored"] = self.stored
        data["reason"] = self.reason
        data["created"] = self.created
        data["notices"] = list(self.notices)
        data["near_duplicate_of"] = self.near_duplicate_of
        data["similarity"] = self.similarity
        data["redacted"] = list(self.redacted)
        return data


@dataclass(frozen=True)
class PurgedMemory:
    """One memory a purge removed (or would remove), and why: ``forgotten`` (tombstoned),
    ``expired`` (past its expiry), or ``history`` (an older version of one of those)."""

    memory: Memory
    reason: str

    def to_dict(self) -> dict[str, Any]:
        """The memory's JSON-ready dict plus ``reason``."""
        return {**self.memory.to_dict(), "reason": self.reason}


@dataclass(frozen=True)
class PurgeResult:
    """What ``purge`` deleted for good — or, with ``dry_run``, what it would delete."""

    dry_run: bool
    items: tuple[PurgedMemory, ...] = ()

    @property
    def count(self) -> int:
        """How many memories were (or would be) deleted."""
        return len(self.items)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (what ``memstore purge --json`` prints)."""
        return {
            "dry_run": self.dry_run,
            "purged": 0 if self.dry_run else self.count,
            "would_purge": self.count if self.dry_run else 0,
            "memories": [item.to_dict() for item in self.items],
        }


@dataclass(frozen=True)
class ImportResult:
    """What ``import_jsonl`` did.

    ``format`` is ``memstore-export`` (a lossless export: ids, history and tombstones kept)
    or ``jsonl`` (plain texts captured anew, with ``results`` holding one capture result
    per line). ``created``: memories written; ``unchanged``: already present as in the
    file; ``updated``: present, with a newer forgotten/superseded state taken from the file;
    ``merged``: the same text was already live under another id, so the imported one was
    stored as superseded by it; ``embedded``: vectors computed (the rest came from the
    file); ``conflicts``: ids whose newer state could not be applied; ``indexed``: vectors in
    the vector index once the import had brought it up to date (None: no index to build).
    """

    format: str
    read: int
    created: int
    unchanged: int
    updated: int = 0
    merged: int = 0
    embedded: int = 0
    conflicts: tuple[str, ...] = ()
    results: tuple[CaptureResult, ...] = ()
    indexed: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (what ``memstore import --json`` prints)."""
        return {
            "format": self.format,
            "read": self.read,
            "created": self.created,
            "unchanged": self.unchanged,
            "updated": self.updated,
            "merged": self.merged,
            "embedded": self.embedded,
            "conflicts": list(self.conflicts),
            "indexed": self.indexed,
        }


@dataclass(frozen=True)
class Hit:
    """A recalled memory with the evidence behind its rank.

    ``score`` is the raw fused score, never rescaled: ``KEYWORD_WEIGHT × keyword strength +
    VECTOR_WEIGHT × cosine`` (``memstore.recall``), where keyword strength is this memory's
    bm25 relative to the query's best keyword match (0 when no query word matches); a leg
    that did not run (``keyword``/``semantic`` mode) counts 0. ``keyword_rank``/``vector_rank``
    are 1-based ranks in each leg's candidate list (None when the leg did not list the
    memory); ``similarity`` is the cosine between query and memory and ``bm25`` FTS5's bm25
    (lower is better, as SQLite gives it; None for a CJK substring-only match), both given
    in hybrid mode whenever the memory has them, even if that leg did not list it.
    """

    memory: Memory
    score: float
    keyword_rank: int | None = None
    vector_rank: int | None = None
    similarity: float | None = None
    bm25: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: the memory's fields flattened beside the evidence."""
        data = self.memory.to_dict()
        data.update(
            score=self.score,
            keyword_rank=self.keyword_rank,
            vector_rank=self.vector_rank,
            similarity=self.similarity,
            bm25=self.bm25,
        )
        return data


@dataclass(frozen=True)
class Check:
    """One check: whether it passed, a one-line summary, and each problem on one line."""

    name: str
    ok: bool
    summary: str
    problems: tuple[str, ...] = ()
    skipped: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "skipped": self.skipped,
                "summary": self.summary, "problems": list(self.problems)}


@dataclass
class VerifyReport:
    """The checks as they stand, and (after ``repair=True``) what was found and done."""

    checks: list[Check]
    repaired: list[str] = field(default_factory=list)
    found: list[Check] | None = None  # the checks before repair, when repair ran

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "checks": [c.to_dict() for c in self.checks],
            "repaired": list(self.repaired),
            "found": [c.to_dict() for c in self.found] if self.found is not None else None,
        }


def memory_status(memory: Memory, at: datetime) -> str:
    """Where a version stands at ``at``: ``forgotten``, ``superseded``, ``expired`` or ``current``."""
    if memory.deleted:
        return "forgotten"
    if memory.superseded_by is not None:
        return "superseded"
    if memory.expired(at):
        return "expired"
    return "current"


def history_to_dicts(versions: list[Memory], at: datetime) -> list[dict[str, Any]]:
    """A memory's versions as ``memstore history --json`` prints them: each one's dict plus
    ``status`` (shared by the CLI and the web page so both give the same data)."""
    return [{**m.to_dict(), "status": memory_status(m, at)} for m in versions]
