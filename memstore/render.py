"""The one place a memory or a hit becomes text: the CLI, the MCP server and the agent hooks
all render through these functions, so a memory looks the same wherever it is shown.

Each surface keeps its own shape (the CLI shows every state and the whole text, the MCP
server a snippet, agent hooks a budgeted one-liner); the pieces they share are built once.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from .models import Hit, Memory
from .timeutil import now

__all__ = [
    "commit_line",
    "context_line",
    "evidence",
    "first_line",
    "hit_lines",
    "hit_summary",
    "memory_head",
    "snippet",
]


def _stamp(moment: datetime, fmt: str = "%Y-%m-%d %H:%M") -> str:
    return moment.astimezone().strftime(fmt)


def memory_head(memory: Memory, *, states: bool = True, expiry: bool = True) -> str:
    """``ID [namespace] YYYY-MM-DD HH:MM #tag …`` in local time, then (with ``states``) whether it
    is forgotten or superseded and (with ``expiry``) when it expires or expired."""
    parts = [memory.id, f"[{memory.namespace}]", _stamp(memory.created_at), *(f"#{t}" for t in memory.tags)]
    if states:
        if memory.deleted:
            parts.append("(forgotten)")
        if memory.superseded_by:
            parts.append(f"(superseded by {memory.superseded_by})")
    if expiry and memory.expires_at is not None:
        until = _stamp(memory.expires_at)
        parts.append(f"(expired {until})" if memory.expired(now()) else f"(expires {until})")
    return " ".join(parts)


def first_line(text: str, width: int | None = None) -> str:
    """The first line of the text (stripped), cut at ``width`` characters; "" for blank text."""
    lines = text.strip().splitlines()
    line = lines[0] if lines else ""
    return line if width is None else line[:width]


def snippet(text: str, limit: int) -> str:
    """The text on one line (whitespace collapsed), shortened to ``limit`` characters with "…"."""
    text = " ".join(text.split())
    if len(text) > limit:
        text = text[: max(1, limit - 1)].rstrip() + "…"
    return text


def evidence(hit: Hit, *, digits: int = 3, cosine_alone: bool = True) -> str:
    """What each leg says about a hit: ``keyword #2, vector #1 cos 0.812``; ``cosine_alone`` also
    shows the cosine of a hit the vector leg did not list."""
    parts = []
    if hit.keyword_rank is not None:
        parts.append(f"keyword #{hit.keyword_rank}")
    if hit.vector_rank is not None and hit.similarity is not None:
        parts.append(f"vector #{hit.vector_rank} cos {hit.similarity:.{digits}f}")
    elif cosine_alone and hit.similarity is not None:
        parts.append(f"cos {hit.similarity:.{digits}f}")
    return ", ".join(parts)


def hit_lines(rank: int, hit: Hit) -> str:
    """A recall hit for the terminal: rank, head, fused score and evidence, then the whole text
    indented."""
    head = f"{rank:>2}. {memory_head(hit.memory)}  score {hit.score:.4f} ({evidence(hit)})"
    text = hit.memory.text.strip().replace("\n", "\n    ")
    return f"{head}\n    {text}"


def hit_summary(rank: int, hit: Hit, limit: int) -> str:
    """A recall hit for an MCP host: rank, head, score and evidence, then a snippet."""
    about = evidence(hit, digits=2, cosine_alone=False)
    return (f"{rank}. {memory_head(hit.memory, expiry=False)} score {hit.score:.4f} ({about})\n"
            f"   {snippet(hit.memory.text, limit)}")


def context_line(memory: Memory, limit: int) -> str:
    """A memory in an agent's context: ``- ID (namespace, date, #tag) text`` with the text on
    one line and at most ``limit`` characters."""
    day = _stamp(memory.created_at, "%Y-%m-%d")
    about = ", ".join([memory.namespace, day, *(f"#{t}" for t in memory.tags)])
    return f"- {memory.id} ({about}) {snippet(memory.text, limit)}"


def commit_line(memory: Any) -> str:
    """A memory captured from a commit: id, branch, short sha and subject."""
    sha = str(memory.metadata.get("commit", ""))[:12]
    return f"  {memory.id} {memory.branch or '-'} {sha} {first_line(memory.text, 80)}"
