"""Git hooks that record commits: install, uninstall, status, and what the hooks run.

``install`` writes small POSIX ``sh`` hooks (``post-commit``; ``post-merge``, as ``git merge``
makes its commits without post-commit; ``post-rewrite`` for amend and rebase) into the
directory git reads hooks from (``core.hooksPath`` if set, else the common git dir, so every
worktree shares them). A hook already there is never overwritten: it is renamed to
``<name>.memstore-chained`` and our hook runs it first, with the same arguments, stdin and
``$0`` (shell hooks are sourced under their original name, so hooks that dispatch on their
own name keep working), and exits with its status. ``uninstall`` puts it back.

The hook itself does almost nothing in the foreground: it starts ``memstore hooks run …``
detached (``setsid``, else ``nohup``; stdin from /dev/null, output to the log) and
returns, so a commit waits a few milliseconds for memstore and can never fail because of it.
The detached process records the commit without embedding it (one SQLite transaction), then
embeds the pending backlog (bounded, one process at a time) and exits. Everything it does,
and any failure (memstore missing, a broken store), is one line in ``memstore-hook.log`` in
the git common dir, which ``memstore hooks status`` shows.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import GitError, InvalidInputError, MemstoreError
from . import repo as gitscope

if TYPE_CHECKING:
    from ..store import MemoryStore

__all__ = [
    "HOOK_NAMES",
    "HooksStatus",
    "InstallReport",
    "RunReport",
    "hook_script",
    "install",
    "log_path",
    "run",
    "spawn_detached",
    "status",
    "uninstall",
]

HOOK_NAMES = ("post-commit", "post-merge", "post-rewrite")
MARKER = "# memstore-hook v1"
CHAIN_SUFFIX = ".memstore-chained"
LOG_NAME = "memstore-hook.log"
#: The log is rotated (to ``.1``) past this size.
LOG_MAX_BYTES = 256 * 1024
#: Pending embeddings one hook process computes before it exits (the rest: recall, next hook).
HOOK_EMBED_MAX = 512
#: Seconds a hook process waits for another one to finish recording before it gives up (logged).
RECORD_LOCK_TIMEOUT = 120
#: Set (to anything) in the environment of ``git commit`` to run the capture in the foreground.
SYNC_ENV = "MEMSTORE_HOOK_SYNC"
#: ``MEMSTORE_HOOK=off`` (or 0, false, no) in the environment: record nothing this time.
OFF_ENV = "MEMSTORE_HOOK"
#: How a hook starts memstore: like ``python -m memstore``, but without the current directory
#: (the repository) on sys.path, where a directory named ``memstore`` would shadow the package.
LAUNCH = (
    'import sys; sys.path[:] = [p for p in sys.path if p not in ("", ".")]; '
    'from memstore.cli import cli; cli(prog_name="memstore")'
)
_SHELLS = {"sh", "bash", "dash", "zsh", "ksh", "ash"}


# ---------------------------------------------------------------------------------------------
# The hook scripts


def hook_script(name: str, *, python: str, global_args: Sequence[str] = (), chain: str | None = None) -> str:
    """The text of our ``name`` hook. ``chain`` is the shell command running the chained
    (pre-existing) hook, or None when there was none at install time."""
    if name not in HOOK_NAMES:
        raise InvalidInputError(f"unknown hook {name!r} (known: {', '.join(HOOK_NAMES)})")
    rewrite = name == "post-rewrite"
    lines = [
        "#!/bin/sh",
        f"{MARKER}: {name}",
        "# Installed by `memstore hooks install`; `memstore hooks uninstall` removes it and puts",
        "# back the hook it chained, if any. It records the commit in memstore from a detached",
        "# background process: the commit never waits for memstore and never fails because of it.",
        f"# Problems are logged to {LOG_NAME} in the git directory (`memstore hooks status`).",
        f"ms_python={shlex.quote(python)}",
        "ms_status=0",
        "ms_input=/dev/null",
        'ms_kind="${1:-}"',
    ]
    if rewrite:
        lines += [
            "# git passes the rewritten commits on stdin: keep them for both readers",
            'ms_input=$(mktemp "${TMPDIR:-/tmp}/memstore-rewrite.XXXXXX" 2>/dev/null) &&',
            '    cat >"$ms_input" || ms_input=/dev/null',
        ]
    lines += [
        f'if [ -x "$0{CHAIN_SUFFIX}" ]; then',
        f'    {chain or _direct_chain()} <"$ms_input"',
        "    ms_status=$?",
        "fi",
        f'case "${{{OFF_ENV}:-}}" in off|0|false|no)',
        '    [ "$ms_input" = /dev/null ] || rm -f "$ms_input"',
        "    exit $ms_status ;;",
        "esac",
        "# One git call, now: the commit and branch must be read before the user's next command",
        "# moves them. Lines: common dir, this worktree's git dir, HEAD, HEAD's ref.",
        "ms_nl='",
        "'",
        'ms_info=$(git rev-parse --git-common-dir --git-dir HEAD --symbolic-full-name HEAD 2>/dev/null)',
        'set -f; ms_ifs=$IFS; IFS=$ms_nl',
        "set -- $ms_info",
        'IFS=$ms_ifs; set +f',
        'ms_log="${1:-.}/' + LOG_NAME + '"',
        'ms_gitdir="${2:-.}" ms_head="${3:-}" ms_ref="${4:-}"',
        '{ : >>"$ms_log"; } 2>/dev/null || ms_log=/dev/null',
    ]
    if not rewrite:
        lines += [
            "# Mid-rebase, post-rewrite records the rebased commits (and an aborted rebase, none).",
            'if [ -d "$ms_gitdir/rebase-merge" ] || [ -d "$ms_gitdir/rebase-apply" ]; then',
            "    exit $ms_status",
            "fi",
        ]
    lines += [
        'if [ -x "$ms_python" ]; then',
        f"    set -- \"$ms_python\" -c {shlex.quote(LAUNCH)}",
        "elif command -v memstore >/dev/null 2>&1; then",
        "    set -- memstore",
        "else",
        f"    printf '%s {name} FAILED: memstore is not installed at %s; "
        "run `memstore hooks install` again\\n' \\",
        '        "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$ms_python" >>"$ms_log"',
        '    [ "$ms_input" = /dev/null ] || rm -f "$ms_input"',
        "    exit $ms_status",
        "fi",
    ]
    run_args = " ".join(shlex.quote(a) for a in global_args)
    tail = f' hooks run {name} --log "$ms_log" --ref "$ms_ref"'
    if not rewrite:
        tail += ' --commit "$ms_head"'
    if rewrite:
        tail += ' --rewrite-type "$ms_kind" --input "$ms_input" --delete-input'
    lines += [
        f'set -- "$@"{" " + run_args if run_args else ""}{tail}',
        f'if [ -n "${{{SYNC_ENV}:-}}" ]; then',
        '    "$@" </dev/null >>"$ms_log" 2>&1',
        "elif command -v setsid >/dev/null 2>&1; then",
        '    setsid "$@" </dev/null >>"$ms_log" 2>&1 &',
        "else",
        '    nohup "$@" </dev/null >>"$ms_log" 2>&1 &',
        "fi",
        "exit $ms_status",
        "",
    ]
    return "\n".join(lines)


def _direct_chain() -> str:
    return f'"$0{CHAIN_SUFFIX}" "$@"'


def _chain_command(chained: Path) -> str:
    """How our hook runs the hook it chained. A plain shell script is sourced by its own
    shell under our name (``$0`` stays ``.../post-commit``: hooks such as husky's look up
    their work by their own name); anything else is executed directly."""
    try:
        with chained.open("rb") as fh:
            first = fh.readline(256).decode("latin-1").rstrip("\n")
    except OSError:
        return _direct_chain()
    words = first[2:].split() if first.startswith("#!") else []
    if len(words) == 1:
        shell = os.path.basename(words[0])
    elif len(words) == 2 and os.path.basename(words[0]) == "env":
        shell = words[1]
    else:
        return _direct_chain()
    if shell not in _SHELLS:
        return _direct_chain()
    interpreter = " ".join(shlex.quote(w) for w in words)
    return f"{interpreter} -c '. \"$0{CHAIN_SUFFIX}\"' \"$0\" \"$@\""


def _is_ours(path: Path) -> bool:
    try:
        with path.open("rb") as fh:
            head = fh.read(512).decode("utf-8", "replace")
    except OSError:
        return False
    return MARKER in head


def _python_of(path: Path) -> str | None:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("ms_python="):
            words = shlex.split(line[len("ms_python="):])
            return words[0] if words else None
    return None


def _write_executable(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.memstore-tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.chmod(0o755)
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------
# install / uninstall / status


@dataclass
class InstallReport:
    """What ``install``/``uninstall`` did, hook by hook."""

    hooks_dir: str
    #: hook name → what happened (installed, updated, chained …, removed, restored …)
    actions: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"hooks_dir": self.hooks_dir, "actions": self.actions, "notes": self.notes}


def install(
    repo_path: str | os.PathLike[str] | None = None,
    *,
    python: str | None = None,
    global_args: Sequence[str] = (),
) -> InstallReport:
    """Install (or refresh) the hooks of the repository at ``repo_path``. Idempotent.

    ``python`` is the interpreter the hooks run memstore with (default: this one);
    ``global_args`` are memstore options baked into the hook (e.g. ``--home DIR``)."""
    repo = gitscope.require_repo(repo_path)
    if repo.bare:
        raise GitError(f"{repo.git_dir} is a bare repository: no commits are made there")
    python = python or sys.executable
    directory = repo.hooks_dir()
    directory.mkdir(parents=True, exist_ok=True)
    report = InstallReport(hooks_dir=str(directory), notes=_install_notes(repo, directory))
    for name in HOOK_NAMES:
        path = directory / name
        chained = directory / (name + CHAIN_SUFFIX)
        if path.is_symlink() or path.exists():
            if _is_ours(path):
                action = "updated"
            elif chained.is_symlink() or chained.exists():
                raise GitError(
                    f"{path} is not memstore's but {chained.name} exists too: move one of them "
                    "aside, then install again (nothing was changed)"
                )
            else:
                os.replace(path, chained)
                action = f"installed, chaining the existing hook (kept as {chained.name})"
        else:
            action = "installed"
        chain = _chain_command(chained) if (chained.is_symlink() or chained.exists()) else None
        text = hook_script(name, python=python, global_args=global_args, chain=chain)
        if action == "updated" and path.read_text(errors="replace") == text:
            action = "already installed"
        _write_executable(path, text)
        report.actions[name] = action
    return report


def _install_notes(repo: gitscope.Repo, directory: Path) -> list[str]:
    notes = []
    configured = repo.config_origin("core.hooksPath")
    if configured:
        value, origin = configured
        local = repo.git("config", "--local", "--get", "core.hooksPath", check=False).strip()
        if not local:
            notes.append(f"core.hooksPath = {value} comes from {origin}: the hooks apply to every "
                         "repository that uses that directory")
        if repo.toplevel and _inside(directory, repo.toplevel) and not _inside(directory, repo.common_dir):
            notes.append(f"the hooks directory {directory} is inside the work tree: the change shows "
                         "in `git status`")
    return notes


def _inside(path: Path, parent: Path) -> bool:
    try:
        path.resolve().relative_to(parent.resolve())
    except ValueError:
        return False
    return True


def uninstall(repo_path: str | os.PathLike[str] | None = None) -> InstallReport:
    """Remove our hooks and put back the hooks they chained. Idempotent."""
    repo = gitscope.require_repo(repo_path)
    directory = repo.hooks_dir()
    report = InstallReport(hooks_dir=str(directory))
    for name in HOOK_NAMES:
        path = directory / name
        chained = directory / (name + CHAIN_SUFFIX)
        has_chained = chained.is_symlink() or chained.exists()
        if _is_ours(path):
            path.unlink()
            if has_chained:
                os.replace(chained, path)
                report.actions[name] = "removed; the chained hook is back in place"
            else:
                report.actions[name] = "removed"
        elif path.is_symlink() or path.exists():
            report.actions[name] = "left alone (not memstore's)"
            if has_chained:
                report.notes.append(f"{chained} was kept: {name} is no longer memstore's")
        else:
            report.actions[name] = "not installed"
    return report


@dataclass
class HookState:
    """One hook file as ``status`` sees it."""

    name: str
    path: str
    #: installed (ours), absent, or other (someone else's hook, not chained)
    state: str
    chained: str | None = None
    python: str | None = None
    python_ok: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class HooksStatus:
    """The hooks of one repository, their log, and the store's pending embeddings."""

    toplevel: str | None
    project: str
    branch: str | None
    hooks_dir: str
    hooks_path: tuple[str, str] | None
    hooks: list[HookState]
    log: str
    log_lines: list[str]
    failures: int
    last_failure: str | None
    pending_embeddings: int | None = None

    @property
    def installed(self) -> bool:
        return all(h.state == "installed" and h.python_ok for h in self.hooks)

    def to_dict(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["hooks"] = [h.to_dict() for h in self.hooks]
        data["hooks_path"] = (
            {"value": self.hooks_path[0], "origin": self.hooks_path[1]} if self.hooks_path else None
        )
        data["installed"] = self.installed
        return data


def status(
    repo_path: str | os.PathLike[str] | None = None,
    *,
    store: MemoryStore | None = None,
    lines: int = 10,
) -> HooksStatus:
    """Which hooks are installed (and with which python), the last log lines and failures."""
    repo = gitscope.require_repo(repo_path)
    directory = repo.hooks_dir()
    states = []
    for name in HOOK_NAMES:
        path = directory / name
        chained = directory / (name + CHAIN_SUFFIX)
        if _is_ours(path):
            python = _python_of(path)
            state = HookState(name, str(path), "installed", python=python,
                              python_ok=bool(python) and os.access(python, os.X_OK))
        elif path.is_symlink() or path.exists():
            state = HookState(name, str(path), "other")
        else:
            state = HookState(name, str(path), "absent")
        if chained.is_symlink() or chained.exists():
            state.chained = str(chained)
        states.append(state)
    log = log_path(repo)
    tail = _tail(log, 400)
    failures = [line for line in tail if " FAILED" in line]
    return HooksStatus(
        toplevel=str(repo.toplevel) if repo.toplevel else None,
        project=repo.project,
        branch=repo.branch,
        hooks_dir=str(directory),
        hooks_path=repo.config_origin("core.hooksPath"),
        hooks=states,
        log=str(log),
        log_lines=tail[-lines:] if lines else [],
        failures=len(failures),
        last_failure=failures[-1] if failures else None,
        pending_embeddings=store.stats()["pending_embeddings"] if store is not None else None,
    )


def _tail(path: Path, count: int) -> list[str]:
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 64 * 1024))
            data = fh.read()
    except OSError:
        return []
    return data.decode("utf-8", "replace").splitlines()[-count:]


# ---------------------------------------------------------------------------------------------
# The log


def log_path(repo: gitscope.Repo) -> Path:
    """Where the hooks of ``repo`` log: ``memstore-hook.log`` in the common git dir."""
    return repo.common_dir / LOG_NAME


def _log(path: Path, kind: str, message: str) -> None:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    try:
        if path.exists() and path.stat().st_size > LOG_MAX_BYTES:
            os.replace(path, path.with_name(path.name + ".1"))
        with path.open("a", encoding="utf-8") as fh:
            fh.write(f"{stamp} {kind} {message}\n")
    except OSError:
        sys.stderr.write(f"{stamp} {kind} {message}\n")


# ---------------------------------------------------------------------------------------------
# What the hooks run


@dataclass
class RunReport:
    """What one hook run did (also written to the log as one line)."""

    kind: str
    line: str = ""
    ok: bool = True
    embedded: int = 0
    report: Any = None


def run(
    kind: str,
    *,
    overrides: Mapping[str, Any] | None = None,
    log: str | os.PathLike[str] | None = None,
    rewrite_type: str | None = None,
    input_path: str | os.PathLike[str] | None = None,
    delete_input: bool = False,
    repo_path: str | os.PathLike[str] | None = None,
    commit: str | None = None,
    ref: str | None = None,
) -> RunReport:
    """Record what a hook reports, then embed the pending backlog (bounded) and return.

    ``kind`` is ``post-commit`` (record ``commit``, default HEAD; skipped mid-rebase, whose
    post-rewrite records the result), ``post-merge`` (the same for the merge commit ``git
    merge``/``git pull`` made, if any) or ``post-rewrite`` (``input_path`` holds git's
    ``old new`` lines; record the new commits, forget the old ones no branch keeps). ``ref``
    is what HEAD pointed to when the hook fired (``refs/heads/NAME``, or ``HEAD`` when
    detached): the branch recorded. Never raises: failures are logged."""
    if kind not in HOOK_NAMES:
        raise InvalidInputError(f"unknown hook {kind!r} (known: {', '.join(HOOK_NAMES)})")
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # the terminal that made the commit may close
    started = time.monotonic()
    result = RunReport(kind)
    pairs: list[tuple[str, str]] = []
    log_file: Path | None = Path(log) if log else None
    label = kind if not rewrite_type else f"{kind} {rewrite_type}"
    try:
        if input_path is not None:
            pairs = _read_pairs(Path(input_path), delete=delete_input)
        repo = gitscope.require_repo(repo_path)
        if log_file is None:
            log_file = log_path(repo)
        if ref:
            repo = replace(repo, branch=ref[len("refs/heads/"):] if ref.startswith("refs/heads/") else None)
        result.line = _record(result, kind, repo, pairs, overrides, commit or "HEAD")
    except BaseException as exc:  # noqa: BLE001 - a hook must never propagate anything
        result.ok = False
        detail = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)).rstrip()
        if isinstance(exc, MemstoreError):  # says what is wrong; a traceback would not help
            result.line = f"FAILED: {exc}"
        else:
            result.line = f"FAILED: {type(exc).__name__}: {exc}\n" + "\n".join(
                "    " + line for line in detail.splitlines()
            )
        if isinstance(exc, KeyboardInterrupt):
            raise
    if result.ok:
        result.line += f" ({time.monotonic() - started:.2f}s)"
    elif commit:
        label += f" {commit[:12]}"
    if log_file is not None:
        _log(log_file, label, result.line)
    else:
        sys.stderr.write(f"{label} {result.line}\n")
    return result


def _read_pairs(path: Path, *, delete: bool) -> list[tuple[str, str]]:
    try:
        text = path.read_text(encoding="utf-8", errors="replace") if str(path) != "-" else sys.stdin.read()
    finally:
        if delete and str(path) not in ("-", os.devnull):
            with contextlib.suppress(OSError):
                path.unlink()
    pairs = []
    for line in text.splitlines():
        words = line.split()
        if len(words) >= 2:
            pairs.append((words[0], words[1]))
    return pairs


def _record(
    result: RunReport, kind: str, repo: gitscope.Repo, pairs: list[tuple[str, str]],
    overrides: Mapping[str, Any] | None, commit: str,
) -> str:
    from ..settings import load_settings
    from ..store import open_store
    from . import capture as gitcapture

    where = f"{repo.project}" + (f"@{repo.branch}" if repo.branch else "")
    if kind != "post-rewrite" and commit == "HEAD" and repo.rebase_in_progress():
        return f"skipped: rebase in progress in {where} (its post-rewrite records the result)"
    from filelock import FileLock

    with open_store(settings=load_settings(overrides)) as store:
        policy = gitcapture.CommitPolicy.from_settings(store.settings)
        # One hook process records at a time, so a post-commit and the post-rewrite that
        # amends its commit agree whichever starts first: the commit is recorded then
        # forgotten, or found rewritten and never recorded.
        with FileLock(str(store.home / "git-hook.lock"), timeout=RECORD_LOCK_TIMEOUT):
            if kind != "post-rewrite":
                report = gitcapture.record_head(store, repo, policy=policy, rev=commit, via=kind,
                                                merges_only=kind == "post-merge")
            else:
                report = gitcapture.record_rewrite(store, repo, pairs, policy=policy)
        result.report = report
        parts = []
        if report.stored:
            shas = " ".join(str(m.metadata.get("commit", ""))[:12] for m in report.stored)
            parts.append(f"stored {shas}")
        if report.already:
            parts.append(f"already had {' '.join(s[:12] for s in report.already)}")
        for sha, why in report.skipped:
            parts.append(f"skipped {sha[:12]}: {why}")
        if report.forgotten:
            parts.append(f"forgot {len(report.forgotten)} rewritten-away commit(s)")
        line = f"ok {where}: " + ("; ".join(parts) or "nothing to record")
        embedded, problem = _embed_backlog(store)
        result.embedded = embedded
        if embedded:
            line += f"; embedded {embedded}"
        if problem:
            line += f"; embedding deferred ({problem})"
    return line


def _embed_backlog(store: MemoryStore) -> tuple[int, str | None]:
    """Embed pending memories, at most HOOK_EMBED_MAX, in one hook process at a time: when
    another holds the lock, it will see our memory too (it loops until the queue is empty)."""
    from filelock import FileLock, Timeout

    lock = FileLock(str(store.home / "embed-pending.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return 0, None
    done = 0
    try:
        while done < HOOK_EMBED_MAX:
            step = store.embed_pending(min(64, HOOK_EMBED_MAX - done))
            if step == 0:
                break
            done += step
    except MemstoreError as exc:
        return done, str(exc)
    finally:
        lock.release()
    return done, None


def spawn_detached(
    kind: str,
    *,
    global_args: Sequence[str] = (),
    repo_path: str | os.PathLike[str] | None = None,
) -> Path:
    """Start ``memstore hooks run KIND`` in a new session (for hook managers such as
    pre-commit that call memstore directly) and return at once. Returns the log path."""
    if kind == "post-rewrite":
        raise InvalidInputError("post-rewrite cannot run detached this way (it needs git's stdin)")
    repo = gitscope.require_repo(repo_path)
    if repo.rebase_in_progress():
        return log_path(repo)  # post-rewrite records the rebased commits
    log = log_path(repo)
    head, ref = (repo.git("rev-parse", "HEAD", "--symbolic-full-name", "HEAD").split() + ["", ""])[:2]
    argv = [sys.executable, "-c", LAUNCH, *global_args, "hooks", "run", kind, "--log", str(log),
            "--commit", head, "--ref", ref]
    with open(log, "ab") as out:
        subprocess.Popen(
            argv, cwd=repo.cwd, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
            start_new_session=True, close_fds=True,
        )
    return log
