"""Installing memstore's agent hooks into Claude Code's settings.json, idempotently.

Claude Code reads hooks from ``~/.claude/settings.json`` (user) and
``<project>/.claude/settings.json`` (project)::

    {"hooks": {"SessionStart": [{"hooks": [{"type": "command", "command": "...", "timeout": 10}]}],
               "UserPromptSubmit": [...]}}

Installing adds one command hook per event, or updates ours in place when it is already
there; every other hook and setting is kept as it was (key order too). Our hooks are
recognised by their command (``memstore ... agent-hook <event>``). The file is replaced
atomically; a file that is not a JSON object is refused and left untouched.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InvalidInputError, StoreError
from .hooks import EVENTS

__all__ = [
    "HOOK_TIMEOUT_S",
    "InstallResult",
    "default_command",
    "hook_config",
    "install",
    "installed_commands",
    "merge_hooks",
    "remove_hooks",
    "settings_path",
    "uninstall",
]

#: Seconds Claude Code gives our hook before killing it (it answers well within one).
HOOK_TIMEOUT_S = 10

_OURS = {event: re.compile(r"memstore\S*\s.*\bagent-hook\s+" + re.escape(event) + r"\b")
         for event in EVENTS}


def default_command() -> str:
    """How the hooks should call memstore: the running ``memstore`` script by absolute path
    (an assistant's PATH may not include this virtualenv), else ``python -m memstore``."""
    script = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if script is not None and script.name in ("memstore", "memstore.exe") and script.exists():
        return shlex.quote(str(script.resolve()))
    return f"{shlex.quote(sys.executable)} -m memstore"


def hook_config(command: str | None = None) -> dict[str, Any]:
    """The ``hooks`` block memstore installs, for base command ``command``."""
    base = command or default_command()
    return {
        EVENTS[event]: [{"hooks": [{"type": "command", "command": f"{base} agent-hook {event}",
                                    "timeout": HOOK_TIMEOUT_S}]}]
        for event in EVENTS
    }


def settings_path(scope: str, project_dir: str | os.PathLike[str] | None = None) -> Path:
    """``~/.claude/settings.json`` for scope ``user``; for ``project``, ``.claude/settings.json``
    in the git work tree containing ``project_dir`` (default: the current directory), or in
    ``project_dir`` itself outside git."""
    if scope == "user":
        return Path.home() / ".claude" / "settings.json"
    if scope != "project":
        raise InvalidInputError(f"scope must be user or project, not {scope!r}")
    start = Path(project_dir or os.getcwd()).resolve()
    root = next((p for p in (start, *start.parents) if (p / ".git").exists()), start)
    return root / ".claude" / "settings.json"


def _hooks_table(settings: dict[str, Any], path: str) -> dict[str, Any]:
    hooks = settings.get("hooks", {})
    if not isinstance(hooks, dict):
        raise InvalidInputError(f"{path}: 'hooks' is not an object; fix it by hand first")
    for event in EVENTS.values():
        groups = hooks.get(event, [])
        if not isinstance(groups, list) or not all(
            isinstance(g, dict) and isinstance(g.get("hooks", []), list) for g in groups
        ):
            raise InvalidInputError(f"{path}: hooks.{event} is not a list of hook groups")
    return hooks


def _is_ours(hook: Any, event: str) -> bool:
    return (isinstance(hook, dict) and isinstance(hook.get("command"), str)
            and bool(_OURS[event].search(hook["command"])))


def merge_hooks(settings: dict[str, Any], command: str | None = None, *,
                path: str = "settings.json") -> dict[str, Any]:
    """``settings`` with memstore's hooks installed (a new dict; the argument is unchanged)."""
    merged = copy.deepcopy(settings)
    hooks = _hooks_table(merged, path)
    wanted = hook_config(command)
    for event, name in EVENTS.items():
        ours = wanted[name][0]["hooks"][0]
        groups = hooks.setdefault(name, [])
        placed = False
        emptied = []
        for group in groups:
            entries = group.get("hooks", [])
            kept = []
            for hook in entries:
                if not _is_ours(hook, event):
                    kept.append(hook)
                elif not placed:  # ours: point it at this memstore, keep the user's other keys
                    kept.append({**hook, "type": "command", "command": ours["command"],
                                 "timeout": hook.get("timeout", ours["timeout"])})
                    placed = True
                # any further copy of ours is a duplicate: dropped
            if entries and not kept:
                emptied.append(group)
            if "hooks" in group:
                group["hooks"] = kept
        hooks[name] = [g for g in groups if not any(g is e for e in emptied)]
        if not placed:
            hooks[name].append({"hooks": [dict(ours)]})
    merged["hooks"] = hooks
    return merged


def remove_hooks(settings: dict[str, Any], *, path: str = "settings.json") -> dict[str, Any]:
    """``settings`` without memstore's hooks; groups and events left empty are removed."""
    merged = copy.deepcopy(settings)
    if "hooks" not in merged:
        return merged
    hooks = _hooks_table(merged, path)
    for event, name in EVENTS.items():
        if name not in hooks:
            continue
        groups = []
        for group in hooks[name]:
            entries = group.get("hooks", [])
            kept = [h for h in entries if not _is_ours(h, event)]
            if len(kept) != len(entries) and not kept:
                continue
            groups.append({**group, "hooks": kept} if "hooks" in group else group)
        if groups:
            hooks[name] = groups
        else:
            del hooks[name]
    if not hooks:
        del merged["hooks"]
    return merged


def installed_commands(settings: dict[str, Any]) -> dict[str, list[str]]:
    """Our hook commands found in ``settings``, per assistant event."""
    found: dict[str, list[str]] = {}
    hooks = settings.get("hooks")
    if not isinstance(hooks, dict):
        return found
    for event, name in EVENTS.items():
        for group in hooks.get(name) or []:
            for hook in (group.get("hooks") or []) if isinstance(group, dict) else []:
                if _is_ours(hook, event):
                    found.setdefault(name, []).append(hook["command"])
    return found


def read_settings(path: Path) -> dict[str, Any]:
    """The JSON object in ``path`` ({} when the file does not exist)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise StoreError(f"cannot read {path}: {exc}") from None
    if not text.strip():
        return {}
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise InvalidInputError(f"{path} is not valid JSON ({exc}); fix it by hand first") from None
    if not isinstance(data, dict):
        raise InvalidInputError(f"{path} does not hold a JSON object; fix it by hand first")
    return data


def _write_atomic(path: Path, data: dict[str, Any]) -> None:
    text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
        fd, tmp = tempfile.mkstemp(prefix=".settings.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, mode)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise StoreError(f"cannot write {path}: {exc}") from None


@dataclass(frozen=True)
class InstallResult:
    """What install/uninstall did to which file."""

    path: Path
    changed: bool
    commands: dict[str, list[str]]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"file": str(self.path), "changed": self.changed, "commands": self.commands}


def install(path: Path, command: str | None = None) -> InstallResult:
    """Merge memstore's hooks into the settings file at ``path`` (created if missing)."""
    current = read_settings(path)
    merged = merge_hooks(current, command, path=str(path))
    changed = merged != current
    if changed:
        _write_atomic(path, merged)
    return InstallResult(path, changed, installed_commands(merged))


def uninstall(path: Path) -> InstallResult:
    """Remove memstore's hooks from the settings file at ``path``; nothing else changes."""
    current = read_settings(path)
    cleaned = remove_hooks(current, path=str(path))
    changed = cleaned != current
    if changed:
        _write_atomic(path, cleaned)
    return InstallResult(path, changed, installed_commands(cleaned))
