"""The overview page's data: counts by namespace/project/tag, captures per week, the model,
pending embeddings, what the hooks captured and logged lately.

Counts come from paging through ``list`` (the facade, so every backend gives the same page);
at 10k memories that is a few hundred milliseconds, and only this page pays it.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

__all__ = ["Overview", "build_overview", "log_tail"]

PAGE = 5000
WEEKS = 12
TOP = 12
LOG_LINES = 12
#: Sources of memories captured by something other than a person (see the Overview's list).
HOOK_SOURCES = ("git", "mcp")


@dataclass
class Overview:
    stats: dict[str, Any]
    by_project: list[tuple[str, int]]
    by_tag: list[tuple[str, int]]
    weeks: list[tuple[str, int]]  # (ISO date of the week's Monday, captures)
    recent_by_source: dict[str, list[Any]]
    logs: dict[str, list[str]] = field(default_factory=dict)

    @property
    def week_max(self) -> int:
        return max((n for _, n in self.weeks), default=0)


def build_overview(store: Any, log_files: dict[str, Path], today: datetime | None = None) -> Overview:
    """Gather the overview of ``store``; ``log_files`` maps a label to a hook log to show."""
    today = today or datetime.now(timezone.utc)
    projects: Counter[str] = Counter()
    tags: Counter[str] = Counter()
    monday = (today - timedelta(days=today.weekday())).date()
    starts = [monday - timedelta(weeks=i) for i in range(WEEKS - 1, -1, -1)]
    per_week: Counter[str] = Counter()
    offset = 0
    while True:
        page = store.list(limit=PAGE, offset=offset)
        for m in page:
            projects[m.project or "(no project)"] += 1
            tags.update(m.tags)
            day = m.created_at.astimezone(timezone.utc).date()
            start = day - timedelta(days=day.weekday())
            if start >= starts[0]:
                per_week[start.isoformat()] += 1
        if len(page) < PAGE:
            break
        offset += PAGE
    recent = {source: store.list(limit=5, source=source) for source in HOOK_SOURCES}
    return Overview(
        stats=store.stats(),
        by_project=projects.most_common(TOP),
        by_tag=tags.most_common(TOP),
        weeks=[(s.isoformat(), per_week.get(s.isoformat(), 0)) for s in starts],
        recent_by_source=recent,
        logs={label: log_tail(path) for label, path in log_files.items()},
    )


def log_tail(path: Path, lines: int = LOG_LINES) -> list[str]:
    """The last lines of a log file, newest last ([] when there is none)."""
    with contextlib.suppress(OSError):
        with path.open("rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(max(0, size - 64 * 1024))
            text = fh.read().decode("utf-8", "replace")
        return text.splitlines()[-lines:]
    return []


def hook_logs(store: Any, cwd: str | None = None) -> dict[str, Path]:
    """The hook logs worth showing: the agent hooks' (beside the store) and, when the page is
    started inside a git repository, that repository's git hook log."""
    from ..agents import hooks as agent_hooks
    from ..git import hooks as git_hooks
    from ..git import repo as gitscope

    found: dict[str, Path] = {"agent hooks": agent_hooks.log_path(store.settings)}
    with contextlib.suppress(Exception):  # no git, or not a repository: nothing to show
        repo = gitscope.detect(cwd)
        if repo is not None:
            found[f"git hooks ({repo.project})"] = git_hooks.log_path(repo)
    return found
