"""What git says about where we stand: the repository, its project identity, the branch, commits.

Everything comes from ``git`` plumbing run as subprocesses (no git library, no parsing of
``.git`` internals), so worktrees, ``core.hooksPath``, reftable and config includes behave
exactly as git itself sees them. Detection runs its three git calls concurrently so the CLI
pays for about one.

The *project* of a repository is its normalised remote URL (``origin``, else the first remote):
``https://github.com/Owner/Repo.git``, ``git@github.com:owner/repo`` and
``ssh://git@github.com:22/owner/repo`` are all ``github.com/owner/repo``; credentials and ports
never appear. Without a remote it is the path of the main worktree, so every linked worktree
of one repository shares one project.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from urllib.parse import unquote, urlsplit

from ..errors import GitError

__all__ = [
    "Commit",
    "Repo",
    "detect",
    "normalise_remote",
    "require_repo",
]

#: Seconds any single git call may take before we give up on it.
GIT_TIMEOUT = 60
#: Hosts whose repository paths are case-insensitive: their project ids are lowercased whole.
CASE_INSENSITIVE_HOSTS = frozenset({"github.com", "gitlab.com", "bitbucket.org", "codeberg.org"})
#: Longest project id kept verbatim (the store's name limit); longer ones are shortened.
MAX_PROJECT_CHARS = 128

# Variables that would make git look at some other repository than the path we name.
_REPO_ENV = (
    "GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_COMMON_DIR", "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES", "GIT_NAMESPACE", "GIT_PREFIX",
)
_SCP_LIKE = re.compile(r"^(?:[^@/]+@)?(?P<host>[^:/]+):(?P<path>.*)$")
_RECORD = b"\x1e"
_LOG_FORMAT = "--format=%x1e%H%x00%P%x00%an%x00%aI%x00%cI%x00%S%x00%B"


@dataclass(frozen=True)
class Commit:
    """One commit as memstore records it (paths are names only, relative to the top level)."""

    sha: str
    parents: tuple[str, ...]
    author: str
    author_date: datetime
    commit_date: datetime
    message: str
    paths: tuple[str, ...] = ()
    #: the branch it was reached from when several were walked (``--all``), else None
    reached_from: str | None = None

    @property
    def subject(self) -> str:
        return self.message.split("\n", 1)[0].strip()

    @property
    def body(self) -> str:
        parts = self.message.split("\n", 1)
        return parts[1].strip() if len(parts) > 1 else ""

    @property
    def is_merge(self) -> bool:
        return len(self.parents) > 1


@dataclass(frozen=True)
class Repo:
    """A git repository as seen from one directory in it."""

    #: the working tree's top level (None in a bare repository)
    toplevel: Path | None
    #: this worktree's git directory (``.git``, or ``.git/worktrees/NAME`` for a linked worktree)
    git_dir: Path
    #: the directory shared by all worktrees (hooks, config and objects live there)
    common_dir: Path
    #: normalised remote URL, else the main worktree's path
    project: str
    #: the checked-out branch (short name), None when HEAD is detached
    branch: str | None
    #: the git environment this repo was found with (a clean one when a path was named)
    env: dict[str, str] = field(default_factory=dict, repr=False, compare=False)

    @property
    def bare(self) -> bool:
        return self.toplevel is None

    @property
    def cwd(self) -> Path:
        return self.toplevel or self.git_dir

    def git(self, *args: str, check: bool = True) -> str:
        """Run ``git ARGS`` here and return stdout as text (UTF-8, undecodable bytes replaced)."""
        return _run(list(args), self.cwd, self.env, check=check).stdout.decode("utf-8", "replace")

    def rebase_in_progress(self) -> bool:
        """True while a rebase is replaying commits (its post-rewrite hook reports the result)."""
        return (self.git_dir / "rebase-merge").is_dir() or (self.git_dir / "rebase-apply").is_dir()

    def hooks_dir(self) -> Path:
        """Where git looks for hooks: ``core.hooksPath`` if set, else the common dir's ``hooks``."""
        out = self.git("rev-parse", "--git-path", "hooks").strip()
        path = Path(out)
        return path if path.is_absolute() else (self.cwd / path)

    def config_origin(self, key: str) -> tuple[str, str] | None:
        """(value, origin) of a config key as ``git config --show-origin`` reports it, or None."""
        out = self.git("config", "--show-origin", "--get", key, check=False).rstrip("\n")
        if not out:
            return None
        origin, _, value = out.partition("\t")
        return value, origin

    def branches(self) -> set[str]:
        """Short names of the local branches."""
        out = self.git("for-each-ref", "--format=%(refname:short)", "refs/heads")
        return {line for line in out.splitlines() if line}

    def reachable(self, shas: Iterable[str]) -> set[str]:
        """The subset of ``shas`` reachable from some local or remote-tracking branch.

        Walks the history once (``rev-list --branches --remotes``) streaming, keeping only
        matches, so it stays cheap in memory on large repositories."""
        wanted = {s for s in shas if s}
        if not wanted:
            return set()
        found: set[str] = set()
        with _popen(["rev-list", "--branches", "--remotes"], self.cwd, self.env) as proc:
            assert proc.stdout is not None
            for line in proc.stdout:
                sha = line.strip().decode("ascii", "replace")
                if sha in wanted:
                    found.add(sha)
                    if len(found) == len(wanted):
                        break
        return found

    def is_reachable(self, sha: str, *, from_head: bool = False) -> bool:
        """Whether one commit is contained in some local or remote-tracking branch (or, with
        ``from_head``, in HEAD's history, which is checked first as the cheap common case)."""
        if from_head and _run(["merge-base", "--is-ancestor", sha, "HEAD"], self.cwd, self.env,
                              check=False).returncode == 0:
            return True
        out = self.git(
            "for-each-ref", "--count=1", f"--contains={sha}", "--format=%(refname)",
            "refs/heads", "refs/remotes", check=False,
        )
        return bool(out.strip())

    def commit(self, rev: str = "HEAD") -> Commit:
        """One commit with its changed paths (a merge: relative to its first parent)."""
        found = list(self.commits(rev, max_count=1))
        if not found:
            raise GitError(f"{rev}: no such commit in {self.cwd}")
        return found[0]

    def commits_by_sha(self, shas: Sequence[str]) -> list[Commit]:
        """These commits (not their history), in the order given."""
        found: dict[str, Commit] = {}
        shas = list(dict.fromkeys(shas))
        for start in range(0, len(shas), 500):
            args = [
                "log", "-z", "--name-only", "--no-show-signature", "--no-color", "--no-ext-diff",
                "--diff-merges=first-parent", "--no-walk=unsorted", _LOG_FORMAT,
                *shas[start : start + 500], "--",
            ]
            found.update((c.sha, c) for c in _parse_log(self, args))
        missing = [s for s in shas if s not in found]
        if missing:
            raise GitError(f"no such commit(s) in {self.cwd}: {', '.join(missing[:5])}")
        return [found[s] for s in shas]

    def count_commits(self, *revs: str, since: datetime | None = None, max_count: int | None = None,
                      all_branches: bool = False) -> int:
        """How many commits :meth:`commits` would yield with the same arguments."""
        args = ["rev-list", "--count", *_walk_args(revs, since, max_count, all_branches)]
        return int(self.git(*args).strip() or 0)

    def commits(self, *revs: str, since: datetime | None = None, max_count: int | None = None,
                all_branches: bool = False) -> Iterator[Commit]:
        """Commits reachable from ``revs`` (default HEAD; every local branch with
        ``all_branches``), newest first, streamed from one ``git log``."""
        args = [
            "log", "-z", "--name-only", "--no-show-signature", "--no-color", "--no-ext-diff",
            "--diff-merges=first-parent", _LOG_FORMAT,
            *_walk_args(revs, since, max_count, all_branches),
        ]
        if all_branches:
            args.insert(1, "--source")
        yield from _parse_log(self, args, with_source=all_branches)


def _walk_args(revs: Sequence[str], since: datetime | None, max_count: int | None,
               all_branches: bool) -> list[str]:
    args: list[str] = []
    if max_count is not None:
        args.append(f"--max-count={int(max_count)}")
    if since is not None:
        args.append(f"--since={since.isoformat()}")
    if all_branches:
        args.append("--branches")
    args.extend(revs or (() if all_branches else ("HEAD",)))
    args.append("--")
    return args


def _parse_log(repo: Repo, args: list[str], *, with_source: bool = False) -> Iterator[Commit]:
    """Parse ``git log -z --name-only`` with :data:`_LOG_FORMAT`: a record is
    ``\\x1e`` sha NUL parents NUL author NUL adate NUL cdate NUL source NUL message NUL,
    then (after a newline) each changed path NUL-terminated."""
    try:
        tokens = _stream_tokens(repo, args)
        pending: list[str] | None = None
        paths: list[str] = []
        for token in tokens:
            if token.startswith(_RECORD) and (pending is None or len(pending) == 7):
                if pending is not None:
                    yield _make_commit(pending, paths, with_source)
                pending, paths = [token[1:].decode("ascii", "replace")], []
            elif pending is None:
                continue
            elif len(pending) < 7:
                pending.append(token.decode("utf-8", "replace"))
            else:
                path = token.decode("utf-8", "replace")
                if not paths and path.startswith("\n"):
                    path = path[1:]
                if path:
                    paths.append(path)
        if pending is not None and len(pending) == 7:
            yield _make_commit(pending, paths, with_source)
    except GitError as exc:
        if "--diff-merges" in str(exc) and "--diff-merges=first-parent" in args:
            # git older than 2.31: merges are listed without their paths.
            args = [a for a in args if a != "--diff-merges=first-parent"]
            yield from _parse_log(repo, args, with_source=with_source)
            return
        raise


def _stream_tokens(repo: Repo, args: list[str]) -> Iterator[bytes]:
    with _popen(args, repo.cwd, repo.env) as proc:
        assert proc.stdout is not None
        rest = b""
        while True:
            chunk = proc.stdout.read(1 << 16)
            if not chunk:
                break
            parts = (rest + chunk).split(b"\0")
            rest = parts.pop()
            yield from parts
        if rest:
            yield rest


def _make_commit(fields: list[str], paths: list[str], with_source: bool) -> Commit:
    sha, parents, author, adate, cdate, source, message = fields
    return Commit(
        sha=sha,
        parents=tuple(parents.split()),
        author=author,
        author_date=datetime.fromisoformat(adate.replace("Z", "+00:00")),
        commit_date=datetime.fromisoformat(cdate.replace("Z", "+00:00")),
        message=message.strip("\n"),
        paths=tuple(dict.fromkeys(paths)),
        reached_from=_short_ref(source) if with_source and source and source != "HEAD" else None,
    )


def _short_ref(ref: str) -> str:
    for prefix in ("refs/heads/", "refs/remotes/"):
        if ref.startswith(prefix):
            return ref[len(prefix):]
    return ref


# ---------------------------------------------------------------------------------------------
# Running git


def _git_env(clean: bool) -> dict[str, str]:
    env = dict(os.environ)
    if clean:
        for name in _REPO_ENV:
            env.pop(name, None)
    # Never wait on a prompt or a lock held by the user's own git commands.
    env["GIT_TERMINAL_PROMPT"] = "0"
    env["GIT_OPTIONAL_LOCKS"] = "0"
    return env


def _run(
    args: list[str], cwd: Path, env: dict[str, str], *, check: bool = True
) -> subprocess.CompletedProcess[bytes]:
    try:
        proc = subprocess.run(
            ["git", *args], cwd=cwd, env=env or None, stdin=subprocess.DEVNULL,
            capture_output=True, timeout=GIT_TIMEOUT,
        )
    except FileNotFoundError:
        raise GitError("git is not installed (or not on PATH)") from None
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise GitError(f"git {args[0]} failed: {exc}") from None
    if check and proc.returncode != 0:
        message = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        raise GitError(f"git {' '.join(args[:2])} failed: {message[-1] if message else proc.returncode}")
    return proc


class _popen:
    """``git ARGS`` with stdout streamed; raises GitError if git fails."""

    def __init__(self, args: list[str], cwd: Path, env: dict[str, str]) -> None:
        self.args = args
        try:
            self.proc = subprocess.Popen(
                ["git", *args], cwd=cwd, env=env or None, stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            )
        except FileNotFoundError:
            raise GitError("git is not installed (or not on PATH)") from None

    def __enter__(self) -> subprocess.Popen[bytes]:
        return self.proc

    def __exit__(self, exc_type: object, *_: object) -> None:
        proc = self.proc
        if exc_type is not None or (proc.stdout and not proc.stdout.closed and proc.poll() is None):
            # stopped early (or failed): git may still be writing
            proc.kill()
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()
        err = proc.stderr.read()
        proc.stderr.close()
        code = proc.wait(timeout=GIT_TIMEOUT)
        if exc_type is None and code not in (0, -9):
            lines = err.decode("utf-8", "replace").strip().splitlines()
            raise GitError(f"git {' '.join(self.args[:2])} failed: {lines[-1] if lines else code}")


# ---------------------------------------------------------------------------------------------
# Detection


def detect(path: str | os.PathLike[str] | None = None) -> Repo | None:
    """The repository containing ``path`` (default: the current directory), or None when it
    is not inside one or git is not installed.

    With an explicit path, GIT_DIR and friends from the environment are ignored so the
    answer is about that path; without one, git's environment is honoured (as in a hook)."""
    try:
        return require_repo(path)
    except GitError:
        return None


def require_repo(path: str | os.PathLike[str] | None = None) -> Repo:
    """Like :func:`detect`, but raises GitError saying why there is no repository."""
    where = Path(path) if path is not None else Path.cwd()
    env = _git_env(clean=path is not None)
    if not where.is_dir():
        raise GitError(f"{where} is not a directory")
    calls = {
        "where": ["rev-parse", "--is-bare-repository", "--absolute-git-dir", "--git-common-dir",
                  "--show-toplevel"],
        "head": ["symbolic-ref", "-q", "HEAD"],
        "remotes": ["config", "--get-regexp", r"^remote\..*\.url$"],
    }
    procs = {}
    try:
        for name, args in calls.items():
            procs[name] = subprocess.Popen(
                ["git", *args], cwd=where, env=env, stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            )
    except FileNotFoundError:
        for proc in procs.values():
            proc.kill()
            proc.communicate()
        raise GitError("git is not installed (or not on PATH)") from None
    results = {}
    for name, proc in procs.items():
        try:
            out, err = proc.communicate(timeout=GIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        results[name] = (proc.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"))
    code, out, err = results["where"]
    lines = out.splitlines()
    if len(lines) < 3:
        message = err.strip().splitlines()
        raise GitError(f"{where} is not in a git repository"
                       + (f" ({message[-1]})" if message and "not a git repository" not in err else ""))
    bare = lines[0].strip() == "true"
    git_dir = Path(lines[1])
    common = Path(lines[2])
    common_dir = (common if common.is_absolute() else where / common).resolve()
    toplevel = Path(lines[3]) if not bare and len(lines) > 3 and lines[3] else None
    if not bare and toplevel is None:
        # inside the .git directory of a non-bare repository: its work tree is next door
        toplevel = common_dir.parent if common_dir.name == ".git" else None
    head = results["head"][1].strip()
    branch = head[len("refs/heads/"):] if head.startswith("refs/heads/") else None
    if branch is None and (git_dir / "rebase-merge" / "head-name").is_file():
        # mid-rebase HEAD is detached; the branch being rebased is recorded here
        name = (git_dir / "rebase-merge" / "head-name").read_text(errors="replace").strip()
        branch = name[len("refs/heads/"):] if name.startswith("refs/heads/") else None
    remotes = _remote_urls(results["remotes"][1])
    project = _project_id(remotes, common_dir, bare, toplevel)
    return Repo(toplevel=toplevel, git_dir=git_dir, common_dir=common_dir, project=project,
                branch=branch, env=env)


def _remote_urls(config_out: str) -> dict[str, str]:
    urls: dict[str, str] = {}
    for line in config_out.splitlines():
        key, _, value = line.partition(" ")
        name = key[len("remote."):-len(".url")]
        if name and value.strip():
            urls.setdefault(name, value.strip())
    return urls


def _project_id(remotes: dict[str, str], common_dir: Path, bare: bool, toplevel: Path | None) -> str:
    main_tree = common_dir if bare else (common_dir.parent if common_dir.name == ".git" else toplevel)
    base = main_tree or common_dir
    if remotes:
        name = "origin" if "origin" in remotes else sorted(remotes)[0]
        identity = normalise_remote(remotes[name], base=base)
        if identity:
            return _shorten(identity)
    return _shorten(_path_identity(base))


def normalise_remote(url: str, *, base: str | os.PathLike[str] | None = None) -> str:
    """A remote URL as a stable project id: ``host/path`` without scheme, user, password,
    port or ``.git`` (lowercased on case-insensitive hosts); local paths and ``file://`` URLs
    become absolute paths (relative ones are taken from ``base``)."""
    url = url.strip()
    if not url:
        return ""
    if "://" in url:
        parts = urlsplit(url)
        if parts.scheme.lower() == "file":
            return _path_identity(Path(unquote(parts.path)))
        host = (parts.hostname or "").lower()
        path = unquote(parts.path)
    else:
        match = _SCP_LIKE.match(url)
        # git's rule: a colon before any slash means scp-like syntax (C:\ is a drive, not a host)
        if match and len(match.group("host")) > 1:
            host, path = match.group("host").lower(), match.group("path")
        else:
            local = Path(url).expanduser()
            if not local.is_absolute() and base is not None:
                local = Path(base) / local
            return _path_identity(local)
    path = path.strip("/")
    if path.endswith(".git"):
        path = path[: -len(".git")].rstrip("/")
    identity = f"{host}/{path}" if path else host
    if host in CASE_INSENSITIVE_HOSTS:
        identity = identity.lower()
    return identity


def _path_identity(path: Path) -> str:
    text = os.path.normpath(os.path.abspath(path))
    for suffix in ("/.git", ".git"):
        if text.endswith(suffix) and len(text) > len(suffix):
            text = text[: -len(suffix)]
            break
    return text


def _shorten(identity: str) -> str:
    """Keep project ids within the store's name limit: an over-long one becomes a short hash
    of the whole plus its tail, still unique and still recognisable."""
    if len(identity) <= MAX_PROJECT_CHARS:
        return identity
    import xxhash

    digest = xxhash.xxh3_64_hexdigest(identity.encode("utf-8"))[:10]
    return f"{digest}…{identity[-(MAX_PROJECT_CHARS - len(digest) - 1):]}"
