"""Who is capturing: the ``author`` a team store records on every memory.

The ``user.name`` setting, else git's ``user.email`` (what teammates recognise in commit
history), else the OS user name. Read once per store open, only for a team store.
"""

from __future__ import annotations

import getpass
import subprocess

from .settings import Settings

__all__ = ["author_name"]

GIT_TIMEOUT_S = 5


def author_name(settings: Settings) -> str | None:
    """The author to record: setting, git email, or OS user (None when none is known)."""
    configured = settings.get("user.name")
    if configured:
        return str(configured).strip() or None
    try:
        out = subprocess.run(
            ["git", "config", "--get", "user.email"], capture_output=True, text=True,
            timeout=GIT_TIMEOUT_S, check=False,
        )
        email = out.stdout.strip()
        if out.returncode == 0 and email:
            return email
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        return getpass.getuser() or None
    except (KeyError, OSError):  # no passwd entry (some containers)
        return None
