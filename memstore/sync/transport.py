"""The git side of sync: the system ``git`` binary, a private object store, one ref.

Objects live in a private bare repository in the store's home (``sync/repo.git``), never in
the user's repository, working tree or branches. Each sync writes one parentless commit (a
snapshot) and moves the remote's ref to it with ``--force-with-lease=<ref>:<expected>``: the
old snapshot becomes unreachable (so a purge removes the text from everything the remote's
refs reach), and a concurrent push from another machine is detected, never overwritten.
Authentication and transport are git's (ssh keys, credential helpers); memstore talks to no host.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ..errors import SyncError

__all__ = ["LOCAL_REF", "PushRejected", "Remote", "RemoteUnreachable", "Repo"]

#: Where the last snapshot seen on the remote is kept locally (so fetches send only news).
LOCAL_REF = "refs/memstore/last"
GIT_TIMEOUT = 300
_MODE_BLOB = "100644"


class RemoteUnreachable(SyncError):
    """git could not reach the remote (down, wrong URL, no access)."""


class PushRejected(SyncError):
    """The remote's ref moved since it was read: another machine pushed first."""


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")
           or k in ("GIT_SSH", "GIT_SSH_COMMAND", "GIT_ASKPASS", "GIT_CONFIG_NOSYSTEM")}
    env.update(
        GIT_TERMINAL_PROMPT="0",
        GIT_AUTHOR_NAME="memstore", GIT_AUTHOR_EMAIL="memstore@localhost",
        GIT_COMMITTER_NAME="memstore", GIT_COMMITTER_EMAIL="memstore@localhost",
        # A fixed date: equal states make equal commits on every machine.
        GIT_AUTHOR_DATE="1970-01-01T00:00:00Z", GIT_COMMITTER_DATE="1970-01-01T00:00:00Z",
    )
    return env


@dataclass(frozen=True)
class Remote:
    """A remote URL (or path) and the ref memories live in there."""

    url: str
    ref: str


class Repo:
    """The private bare repository sync keeps its objects in."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._env = _env()
        if not (path / "HEAD").is_file():
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            self.git("init", "-q", "--bare", str(path), cwd=path.parent)
            # No delta search when packing (vectors do not compress; it only costs CPU).
            for key, value in (("core.logAllRefUpdates", "false"), ("gc.auto", "0"),
                               ("pack.window", "0"), ("pack.depth", "0"), ("core.compression", "1")):
                self.git("config", key, value)
        os.chmod(path, 0o700)

    def git(self, *args: str, input: bytes | None = None, cwd: Path | None = None,
            check: bool = True) -> subprocess.CompletedProcess[bytes]:
        """Run git in the private repository; GitError-like SyncError on failure."""
        try:
            proc = subprocess.run(
                ["git", *args], cwd=cwd or self.path, env=self._env, input=input,
                stdin=None if input is not None else subprocess.DEVNULL,
                capture_output=True, timeout=GIT_TIMEOUT,
            )
        except FileNotFoundError:
            raise SyncError("git is not installed (or not on PATH)") from None
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise SyncError(f"git {args[0]} failed: {exc}") from None
        if check and proc.returncode != 0:
            raise SyncError(f"git {args[0]} failed: {_last_line(proc.stderr)}")
        return proc

    # -- the remote --------------------------------------------------------------------------

    def remote_oid(self, remote: Remote) -> str | None:
        """The oid the remote's ref points at (None when it has no such ref)."""
        proc = self.git("ls-remote", "--", remote.url, remote.ref, check=False)
        if proc.returncode != 0:
            raise RemoteUnreachable(f"cannot reach {remote.url}: {_last_line(proc.stderr)}")
        for line in proc.stdout.decode("utf-8", "replace").splitlines():
            oid, _, name = line.partition("\t")
            if name == remote.ref:
                return oid.strip()
        return None

    def fetch(self, remote: Remote, oid: str) -> None:
        """Make ``oid`` (the remote's ref) present locally under LOCAL_REF."""
        if not self.has(oid):
            proc = self.git("fetch", "-q", "--no-tags", "--no-write-fetch-head", "--", remote.url,
                            f"+{remote.ref}:{LOCAL_REF}", check=False)
            if proc.returncode != 0:
                raise RemoteUnreachable(f"cannot fetch from {remote.url}: {_last_line(proc.stderr)}")
        self.git("update-ref", LOCAL_REF, oid)

    def push(self, remote: Remote, oid: str, expected: str | None) -> None:
        """Move the remote's ref to ``oid`` if it still points at ``expected`` (None: absent)."""
        lease = f"--force-with-lease={remote.ref}:{expected or ''}"
        proc = self.git("push", "-q", "--porcelain", "--no-verify", lease, "--", remote.url,
                        f"{oid}:{remote.ref}", check=False)
        if proc.returncode == 0:
            return
        out = (proc.stdout + proc.stderr).decode("utf-8", "replace")
        if "stale info" in out or "fetch first" in out or "non-fast-forward" in out or "[rejected]" in out:
            raise PushRejected(f"{remote.url} {remote.ref} moved while syncing (another machine pushed)")
        if "Could not read from remote" in out or "does not appear to be a git repository" in out:
            raise RemoteUnreachable(f"cannot push to {remote.url}: {_last_line(proc.stderr)}")
        raise SyncError(f"git push to {remote.url} failed: {_last_line(proc.stderr or proc.stdout)}")

    # -- objects -----------------------------------------------------------------------------

    def has(self, oid: str) -> bool:
        return self.git("cat-file", "-e", f"{oid}^{{commit}}", check=False).returncode == 0

    def tree(self, oid: str) -> dict[str, str]:
        """path → blob oid of every file in the commit's tree; refuses anything not a plain
        tree of files (the ref may have been rewritten by hand)."""
        kind = self.git("cat-file", "-t", oid, check=False).stdout.strip()
        if kind != b"commit":
            raise SyncError(f"the remote ref points at a {kind.decode() or 'missing object'}, not a commit")
        entries: dict[str, str] = {}
        for item in self.git("ls-tree", "-r", "-z", "--full-tree", oid).stdout.split(b"\0"):
            if not item:
                continue
            meta, _, path = item.partition(b"\t")
            mode, kind_, blob = meta.split(b" ")
            if kind_ != b"blob" or mode != _MODE_BLOB.encode():
                raise SyncError(f"the remote ref holds a {kind_.decode()} at {path!r}, not a memstore file")
            entries[path.decode("utf-8", "replace")] = blob.decode()
        return entries

    def blobs(self, entries: Mapping[str, str]) -> dict[str, bytes]:
        """path → bytes for ``entries`` (path → blob oid), read by one ``cat-file --batch``."""
        if not entries:
            return {}
        items = list(entries.items())
        out = self.git("cat-file", "--batch", input="".join(f"{b}\n" for _, b in items).encode()).stdout
        files, pos = {}, 0
        for path, _blob in items:
            end = out.index(b"\n", pos)
            size = int(out[pos:end].split(b" ")[2])
            files[path] = out[end + 1 : end + 1 + size]
            pos = end + 1 + size + 1
        return files

    def read_commit(self, oid: str) -> dict[str, bytes]:
        """path → bytes of every file in the commit's tree."""
        return self.blobs(self.tree(oid))

    def write_commit(self, files: Mapping[str, bytes | str]) -> str:
        """Write a parentless commit whose tree holds ``files`` (path → bytes, or the oid of a
        blob already here) with one ``git fast-import``; returns the commit's oid."""
        message = b"memstore sync snapshot\n"
        chunks = [b"reset refs/memstore/build\n", b"commit refs/memstore/build\n",
                  b"committer memstore <memstore@localhost> 0 +0000\n",
                  b"data %d\n" % len(message), message]
        for path in sorted(files):
            data = files[path]
            if isinstance(data, str):
                chunks.append(f"M {_MODE_BLOB} {data} {path}\n".encode())
            else:
                chunks += [f"M {_MODE_BLOB} inline {path}\n".encode(), b"data %d\n" % len(data), data, b"\n"]
        chunks.append(b"done\n")
        self.git("fast-import", "--quiet", "--done", input=b"".join(chunks))
        oid = self.git("rev-parse", "refs/memstore/build").stdout.decode().strip()
        self.git("update-ref", "-d", "refs/memstore/build")
        return oid

    def forget_unreachable(self) -> None:
        """Drop every object no ref reaches (old snapshots, which may hold purged text)."""
        self.git("reflog", "expire", "--expire=now", "--all", check=False)
        self.git("gc", "-q", "--prune=now")


def blob_oid(data: bytes) -> str:
    """The oid git gives a blob with these bytes."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _last_line(err: bytes) -> str:
    lines = [line for line in err.decode("utf-8", "replace").strip().splitlines() if line.strip()]
    return lines[-1] if lines else "unknown error"
