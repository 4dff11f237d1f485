"""Plain data returned by the store: a Memory, a recall Hit. No I/O here."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

__all__ = ["CaptureResult", "Hit", "Memory"]


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
        }


@dataclass(frozen=True)
class CaptureResult(Memory):
    """The memory a capture returned, and what the capture did.

    ``created`` is False when identical text was already stored in the same
    scope and the existing memory was returned instead. ``redacted`` lists the kind
    of each secret replaced by a ``[REDACTED:<kind>]`` marker before storing.
    """

    created: bool = True
    notices: tuple[str, ...] = field(default=())
    redacted: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        data = super().to_dict()
        data["created"] = self.created
        data["notices"] = list(self.notices)
        data["redacted"] = list(self.redacted)
        return data


@dataclass(frozen=True)
class Hit:
    """A recalled memory with the evidence behind its rank.

    ``score`` is the raw Reciprocal Rank Fusion score (not rescaled);
    ``keyword_rank``/``vector_rank`` are 1-based ranks in each leg (None when
    the leg did not return the memory); ``similarity`` is the cosine between
    query and memory; ``bm25`` is FTS5's bm25 (lower is better, as SQLite gives it).
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
