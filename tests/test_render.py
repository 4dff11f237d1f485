"""memstore.render: the one text rendering of memories and hits that the CLI, MCP and agent hooks share."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone

from memstore import render
from memstore.models import Hit, Memory

T0 = datetime(2026, 3, 4, 5, 6, tzinfo=timezone.utc)


def _memory(**changes) -> Memory:
    memory = Memory(
        id="m1", text="  first line\nsecond   line ", namespace="decisions", tags=["db", "ops"], metadata={},
        source=None, project=None, branch=None, content_hash="h", created_at=T0, updated_at=T0,
        deleted=False, deleted_at=None, expires_at=None, superseded_by=None, supersedes=None,
    )
    return replace(memory, **changes)


def _local(moment: datetime, fmt: str = "%Y-%m-%d %H:%M") -> str:
    return moment.astimezone().strftime(fmt)


def test_memory_head_shows_states_and_expiry_on_request():
    stamp = _local(T0)
    until = T0 + timedelta(days=1)
    gone = _memory(deleted=True, superseded_by="m2", expires_at=until)
    states = f"m1 [decisions] {stamp} #db #ops (forgotten) (superseded by m2)"
    assert render.memory_head(_memory()) == f"m1 [decisions] {stamp} #db #ops"
    assert render.memory_head(gone) == f"{states} (expired {_local(until)})"
    assert render.memory_head(gone, expiry=False) == states
    assert render.memory_head(gone, states=False, expiry=False) == f"m1 [decisions] {stamp} #db #ops"


def test_text_pieces():
    assert render.first_line("  first line\nsecond") == "first line"
    assert render.first_line("abcdef", 3) == "abc"
    assert render.first_line("   ") == ""
    assert render.snippet("a  b\n c", 10) == "a b c"
    assert render.snippet("abcdef ghij", 6) == "abcde…"
    assert render.snippet("abc", 0) == "a…"


def test_hits_for_the_terminal_and_for_mcp():
    hit = Hit(memory=_memory(), score=0.5, keyword_rank=2, vector_rank=1, similarity=0.81234, bm25=-1.0)
    head = f"m1 [decisions] {_local(T0)} #db #ops"
    assert render.hit_lines(3, hit) == (
        f" 3. {head}  score 0.5000 (keyword #2, vector #1 cos 0.812)\n    first line\n    second   line"
    )
    assert render.hit_summary(3, hit, 500) == (
        f"3. {head} score 0.5000 (keyword #2, vector #1 cos 0.81)\n   first line second line"
    )
    cosine_only = replace(hit, vector_rank=None)
    assert render.evidence(cosine_only) == "keyword #2, cos 0.812"
    assert render.evidence(cosine_only, digits=2, cosine_alone=False) == "keyword #2"


def test_agent_context_and_commit_lines():
    day = _local(T0, "%Y-%m-%d")
    assert render.context_line(_memory(), 400) == f"- m1 (decisions, {day}, #db, #ops) first line second line"
    assert render.context_line(_memory(), 8) == f"- m1 (decisions, {day}, #db, #ops) first l…"
    commit = _memory(branch="main", metadata={"commit": "abcdef1234567890"})
    assert render.commit_line(commit) == "  m1 main abcdef123456 first line"
