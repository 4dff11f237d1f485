"""Commits as memories: what a commit becomes, and the operations that keep them in step with git.

One commit is one memory: its message (subject and body), then a last line naming the short
sha and the changed paths, so keyword recall finds a commit by file name or sha while the
embedding reads the message first. It lives in namespace ``git.namespace`` (``commits``),
tagged ``commit`` (and ``merge``), source ``git``, with the repository's project and the
branch, dated by the commit (committer date). Metadata: ``commit`` (full sha), ``parents``,
``author``, ``author_date``, ``paths`` (capped; ``paths_total`` counts them all) and
``captured_by`` (``post-commit``, ``post-rewrite`` or ``import-git``).

Every operation is idempotent by sha within a project: a commit already recorded, even one
the user forgot, is never recorded again. Everything goes through ``MemoryStore.capture`` /
``capture_many``, so validation and redaction apply to commit text like any other.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .. import limits
from ..models import CaptureResult, Memory
from ..settings import SETTINGS
from .repo import Commit, Repo

if TYPE_CHECKING:
    from ..settings import Settings
    from ..store import MemoryStore

__all__ = [
    "CommitPolicy",
    "GitReport",
    "commit_text",
    "forget_stale_branches",
    "import_history",
    "known_commits",
    "record_commits",
    "record_head",
    "record_rewrite",
]

SOURCE = "git"
#: Changed paths named in a memory's text (all of them, up to META_PATHS, go in metadata).
TEXT_PATHS = 20
#: Changed paths kept in metadata.
META_PATHS = 200
#: Up to this many shas are looked up one query each; more, with one pass over the project.
LOOKUP_ONE_BY_ONE = 32
#: Commits captured per transaction when importing history.
IMPORT_BATCH = 256
#: Subjects git (and forges) generate for merges: such a merge without a body says nothing new.
_GENERATED_MERGE = (
    "Merge branch ", "Merge branches ", "Merge remote-tracking branch ", "Merge tag ",
    "Merge commit ", "Merge pull request ", "Merge remote branch ",
)


@dataclass(frozen=True)
class CommitPolicy:
    """Which commits become memories, and where they go (from the ``git.*`` settings)."""

    namespace: str = SETTINGS["git.namespace"].default
    #: auto: merges only with a message beyond git's generated one; all; none
    merges: str = SETTINGS["git.merges"].default
    #: skip, or capture (the memory then names only the sha and paths)
    empty_messages: str = SETTINGS["git.empty_messages"].default

    @classmethod
    def from_settings(cls, settings: Settings) -> CommitPolicy:
        return cls(
            namespace=settings.get("git.namespace"),
            merges=settings.get("git.merges"),
            empty_messages=settings.get("git.empty_messages"),
        )

    def skip_reason(self, commit: Commit) -> str | None:
        """Why this commit is not recorded, or None when it is."""
        if commit.is_merge:
            if self.merges == "none":
                return "merge commit (git.merges = none)"
            if self.merges == "auto" and not commit.body and commit.subject.startswith(_GENERATED_MERGE):
                return "merge commit with a generated message (git.merges = auto)"
        if not commit.message.strip() and self.empty_messages == "skip":
            return "empty commit message (git.empty_messages = skip)"
        return None


@dataclass
class GitReport:
    """What a git operation did to the store."""

    #: memories created for commits
    stored: list[CaptureResult] = field(default_factory=list)
    #: shas already recorded in this project (live or forgotten)
    already: list[str] = field(default_factory=list)
    #: (sha, reason) of commits not recorded by policy
    skipped: list[tuple[str, str]] = field(default_factory=list)
    #: memories forgotten (rewritten-away commits, or stale branches)
    forgotten: list[Memory] = field(default_factory=list)
    #: gc dry run: memories that would be forgotten
    would_forget: list[Memory] = field(default_factory=list)
    #: commits looked at
    seen: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "seen": self.seen,
            "stored": [m.to_dict() for m in self.stored],
            "already": self.already,
            "skipped": [{"commit": sha, "reason": why} for sha, why in self.skipped],
            "forgotten": [m.to_dict() for m in self.forgotten],
            "would_forget": [m.to_dict() for m in self.would_forget],
        }


def commit_text(commit: Commit) -> str:
    """The memory text of a commit: its message, then ``commit <sha12> · N files: …``."""
    message = commit.message.strip() or "(no commit message)"
    paths = list(commit.paths)
    kind = " (merge)" if commit.is_merge else ""
    if paths:
        named = ", ".join(paths[:TEXT_PATHS])
        more = f" (+{len(paths) - TEXT_PATHS} more)" if len(paths) > TEXT_PATHS else ""
        noun = "file" if len(paths) == 1 else "files"
        trailer = f"commit {commit.sha[:12]}{kind} · {len(paths)} {noun}: {named}{more}"
    else:
        trailer = f"commit {commit.sha[:12]}{kind} · no files changed"
    # The store refuses text over its limit rather than cut it; a commit message is ours to trim.
    room = limits.MAX_TEXT_BYTES - len(trailer.encode("utf-8")) - 64
    encoded = message.encode("utf-8")
    if len(encoded) > room:
        message = encoded[:room].decode("utf-8", "ignore").rstrip() + "\n[… message truncated]"
    return f"{message}\n\n{trailer}"


def _metadata(commit: Commit, via: str) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "commit": commit.sha,
        "parents": list(commit.parents),
        "author": commit.author,
        "author_date": commit.author_date.isoformat(),
        "paths": list(commit.paths[:META_PATHS]),
        "paths_total": len(commit.paths),
        "captured_by": via,
    }
    # metadata has a size limit too: long path lists are cut until it fits
    while len(json.dumps(meta, ensure_ascii=False).encode("utf-8")) > limits.MAX_METADATA_BYTES - 256:
        meta["paths"] = meta["paths"][: len(meta["paths"]) // 2]
    return meta


def _item(commit: Commit, repo: Repo, policy: CommitPolicy, via: str, branch: str | None) -> dict[str, Any]:
    return {
        "text": commit_text(commit),
        "namespace": policy.namespace,
        "tags": ["commit", "merge"] if commit.is_merge else ["commit"],
        "source": SOURCE,
        "metadata": _metadata(commit, via),
        "project": repo.project,
        "branch": branch,
        "created_at": commit.commit_date,
    }


def known_commits(store: MemoryStore, project: str, shas: Iterable[str] | None = None) -> dict[str, Memory]:
    """sha → memory of the commits already recorded in ``project`` (forgotten ones included).

    With a few ``shas``, only those are looked up; otherwise the project's are read in pages."""
    found: dict[str, Memory] = {}
    wanted = list(dict.fromkeys(shas)) if shas is not None else None
    if wanted is not None and len(wanted) <= LOOKUP_ONE_BY_ONE:
        for sha in wanted:
            for deleted in (False, True):
                for memory in store.list(limit=10, project=project, source=SOURCE,
                                         metadata={"commit": sha}, deleted=deleted):
                    found.setdefault(sha, memory)
        return found
    for deleted in (True, False):  # live ones win when both exist
        offset = 0
        while True:
            page = store.list(limit=10_000, offset=offset, project=project, source=SOURCE, deleted=deleted)
            for memory in page:
                sha = memory.metadata.get("commit")
                if isinstance(sha, str):
                    found[sha] = memory
            if len(page) < 10_000:
                break
            offset += len(page)
    if wanted is not None:
        return {sha: found[sha] for sha in wanted if sha in found}
    return found


def record_commits(
    store: MemoryStore,
    repo: Repo,
    commits: Iterable[Commit],
    *,
    policy: CommitPolicy,
    via: str,
    embed: bool = False,
    known: Mapping[str, Memory] | None = None,
    live_only: bool = False,
) -> GitReport:
    """Record commits not yet known in this project. Without ``embed`` they are stored at
    once without vectors (see ``MemoryStore.embed_pending``). With ``live_only``, a commit
    no branch (nor HEAD) holds any more, e.g. amended before its hook ran, is skipped."""
    commits = list(commits)
    report = GitReport(seen=len(commits))
    if known is None:
        known = known_commits(store, repo.project, [c.sha for c in commits])
    items = []
    for commit in commits:
        if commit.sha in known:
            report.already.append(commit.sha)
            continue
        reason = policy.skip_reason(commit)
        if reason is None and live_only and not repo.is_reachable(commit.sha, from_head=True):
            reason = "no branch holds it any more (amended, rebased or deleted before it was recorded)"
        if reason:
            report.skipped.append((commit.sha, reason))
            continue
        items.append(_item(commit, repo, policy, via, commit.reached_from or repo.branch))
    if items:
        for result in store.capture_many(items, embed=embed):
            if result.created:
                report.stored.append(result)
            else:
                report.already.append(str(result.metadata.get("commit", "")))
    return report


def record_head(
    store: MemoryStore, repo: Repo, *, policy: CommitPolicy, rev: str = "HEAD", via: str = "post-commit",
    merges_only: bool = False,
) -> GitReport:
    """Record the commit just made (``rev``, HEAD when the hook fired): what post-commit does.
    ``merges_only`` (post-merge): a fast-forward made no commit of ours, so nothing is recorded."""
    commit = repo.commit(rev)
    if merges_only and not commit.is_merge:
        return GitReport(seen=1, skipped=[(commit.sha, "fast-forward: no merge commit made")])
    return record_commits(store, repo, [commit], policy=policy, via=via, live_only=True)


def record_rewrite(
    store: MemoryStore, repo: Repo, pairs: Iterable[tuple[str, str]], *, policy: CommitPolicy
) -> GitReport:
    """After an amend or rebase (post-rewrite): record each new commit, and forget the memory
    of each old one unless the old commit is still on some branch (local or remote)."""
    pairs = [(old, new) for old, new in pairs if old and new]
    news = list(dict.fromkeys(new for _, new in pairs))
    report = record_commits(store, repo, repo.commits_by_sha(news), policy=policy, via="post-rewrite",
                            live_only=True)
    olds = [old for old, new in pairs if old != new and old not in news]
    for sha, memory in known_commits(store, repo.project, olds).items():
        if memory.deleted or repo.is_reachable(sha):
            continue
        report.forgotten.append(store.forget(memory.id))
    return report


def import_history(
    store: MemoryStore,
    repo: Repo,
    *,
    policy: CommitPolicy,
    since: datetime | None = None,
    max_count: int | None = None,
    all_branches: bool = False,
    embed: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> GitReport:
    """Record existing history (newest first; HEAD's, or every local branch's), skipping
    commits already recorded. ``progress(done, total)`` follows the commits walked."""
    total = repo.count_commits(since=since, max_count=max_count, all_branches=all_branches)
    known = known_commits(store, repo.project)
    report = GitReport()
    batch: list[Commit] = []

    def flush() -> None:
        part = record_commits(store, repo, batch, policy=policy, via="import-git", embed=embed, known=known)
        report.stored.extend(part.stored)
        report.already.extend(part.already)
        report.skipped.extend(part.skipped)
        batch.clear()

    for commit in repo.commits(since=since, max_count=max_count, all_branches=all_branches):
        report.seen += 1
        batch.append(commit)
        if len(batch) >= IMPORT_BATCH:
            flush()
            if progress:
                progress(min(report.seen, total), total)
    if batch:
        flush()
    if progress:
        progress(total, total)
    return report


def forget_stale_branches(store: MemoryStore, repo: Repo, *, dry_run: bool = True) -> GitReport:
    """Forget (tombstone) commit memories of this project whose branch no longer exists and
    whose commit is not reachable from any remaining local or remote-tracking branch.
    With ``dry_run`` only report them. Notes (non-commit memories) are never touched."""
    branches = repo.branches()
    candidates: dict[str, list[Memory]] = {}
    for memory in known_commits(store, repo.project).values():
        sha = memory.metadata.get("commit")
        if memory.deleted or not memory.branch or memory.branch in branches or not isinstance(sha, str):
            continue
        candidates.setdefault(sha, []).append(memory)
    reachable = repo.reachable(candidates)
    report = GitReport(seen=sum(len(v) for v in candidates.values()))
    for sha, memories in candidates.items():
        if sha in reachable:
            continue
        for memory in memories:
            if dry_run:
                report.would_forget.append(memory)
            else:
                report.forgotten.append(store.forget(memory.id))
    return report
