"""Memory context for coding assistants' lifecycle hooks (Claude Code's hook protocol).

``memstore agent-hook session-start`` and ``memstore agent-hook prompt`` read the hook's
JSON event on stdin (``session_id``, ``cwd``, ``hook_event_name``, and ``prompt`` for a
prompt) and print ``{"hookSpecificOutput": {"hookEventName": ..., "additionalContext": ...}}``:
a few memories, each with its id so the agent can ``get`` the rest, within a character
budget (setting ``agent.context_chars``). When nothing is worth saying they print nothing.

A hook sits in front of every prompt, so two rules hold:

* **Never break the agent.** Bad or empty input, a broken store, a missing model: no
  context, exit status 0, and one line in the hook log (:func:`log_path`).
* **Answer in time.** A cold process pays for loading the embedding model, which can take
  longer than a prompt should wait. With ``agent.recall_mode = auto`` the keyword leg (and,
  at session start, the most recent memories) is answered first; hybrid recall then runs in
  a worker thread until ``agent.time_budget_ms`` after the process started. If it has not
  answered by then the keyword hits are used and the caller exits without waiting for it.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from .. import limits
from ..errors import InvalidInputError, MemstoreError
from ..git import repo as gitscope
from ..models import Hit, Memory
from ..render import context_line
from ..settings import Settings, home_dir, load_settings
from ..store import MemoryStore, open_store

__all__ = [
    "EVENTS",
    "HookResult",
    "ProjectScope",
    "log_path",
    "process_started",
    "project_scope",
    "render_context",
    "run_hook",
]

#: Our event names → the assistant's hook event names.
EVENTS = {"session-start": "SessionStart", "prompt": "UserPromptSubmit"}

#: Memories considered per recall (the budget usually cuts the list shorter).
CANDIDATES = 10
#: Keyword-only recall keeps hits whose bm25 is at least this share of the best hit's.
KEYWORD_RELATIVE = 0.5
#: Most characters of one memory's text in the context (less when the budget is small).
MEMORY_CHARS = 400
#: Smallest budget that can hold a header and one useful line.
MIN_BUDGET = 200
#: The hook log is rotated (one old copy kept) past this size.
LOG_MAX_BYTES = 256 * 1024


# -- project scope (the seam for git scoping) -----------------------------------------------


@dataclass(frozen=True)
class ProjectScope:
    """Where the agent works and how memories are narrowed to it.

    ``label`` names the project in the context header and is the session-start query;
    ``filters`` are extra keyword arguments for ``MemoryStore.recall`` and ``list`` (the
    project's memories plus those with no project); ``capture`` those for ``capture`` (the
    project and branch to record).
    """

    cwd: str | None
    label: str | None
    filters: Mapping[str, Any] = field(default_factory=dict)
    capture: Mapping[str, Any] = field(default_factory=dict)


def project_scope(cwd: str | os.PathLike[str] | None) -> ProjectScope:
    """The scope of an agent working in ``cwd`` (default: this process's directory): inside a
    git repository, its project (as ``memstore recall`` scopes it: the project plus memories
    with none) labelled by the repository's name; elsewhere the directory's name, unscoped."""
    path = Path(cwd) if cwd else Path.cwd()
    repo = gitscope.detect(path) if path.is_dir() else None
    if repo is None:
        return ProjectScope(str(path), path.name or str(path))
    label = repo.toplevel.name if repo.toplevel is not None else repo.project.rstrip("/").rsplit("/", 1)[-1]
    return ProjectScope(str(path), label, {"project": [repo.project, None]},
                        {"project": repo.project, "branch": repo.branch})


# -- options -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Options:
    budget: int
    mode: str
    time_budget: float  # seconds after the process started
    min_similarity: float

    @classmethod
    def from_settings(cls, settings: Settings) -> _Options:
        budget = int(settings["agent.context_chars"])
        if budget < MIN_BUDGET:
            raise InvalidInputError(f"agent.context_chars must be at least {MIN_BUDGET}, not {budget}")
        time_budget = int(settings["agent.time_budget_ms"])
        if time_budget < 0:
            raise InvalidInputError(f"agent.time_budget_ms must not be negative, not {time_budget}")
        return cls(budget, settings["agent.recall_mode"], time_budget / 1000,
                   float(settings["agent.min_similarity"]))


@dataclass
class HookResult:
    """What a hook run produced.

    ``output`` is the JSON to print (None: print nothing); ``context`` the text inside it;
    ``recall_mode`` which recall answered (``hybrid``, ``keyword`` or ``none``); ``pending``
    is True when a hybrid recall is still running in a daemon thread, so the caller should
    print and exit at once (``os._exit``) rather than wait for it; ``error`` is the logged
    error, if any.
    """

    event: str
    output: dict[str, Any] | None = None
    context: str = ""
    recall_mode: str = "none"
    pending: bool = False
    error: str | None = None
    memory_ids: list[str] = field(default_factory=list)


# -- input -------------------------------------------------------------------------------------


def _parse_event(raw: bytes | str, event: str) -> dict[str, Any]:
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidInputError(f"hook input is not UTF-8 ({exc.reason})") from None
    if not raw.strip():
        raise InvalidInputError("no hook input on stdin (expected the hook event as JSON)")
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise InvalidInputError(f"hook input is not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise InvalidInputError(f"hook input must be a JSON object, not {type(data).__name__}")
    name = data.get("hook_event_name")
    if name is not None and name != EVENTS[event]:
        raise InvalidInputError(
            f"`agent-hook {event}` is for {EVENTS[event]} events but received {name!r}"
        )
    cwd = data.get("cwd")
    if cwd is not None and not isinstance(cwd, str):
        raise InvalidInputError("hook input field cwd must be a string")
    return data


def _clip_query(text: str) -> str:
    """The longest prefix of ``text`` that recall accepts as a query."""
    data = text.encode("utf-8")
    if len(data) <= limits.MAX_QUERY_BYTES:
        return text
    return data[: limits.MAX_QUERY_BYTES].decode("utf-8", errors="ignore")


# -- recall within the time budget -----------------------------------------------------------


def process_started() -> float:
    """The ``time.monotonic()`` at which this process started, so that a hook's time budget
    includes the interpreter's own start-up (Linux; elsewhere: now)."""
    now = time.monotonic()
    try:
        with open("/proc/self/stat", "rb") as fh:
            start_ticks = int(fh.read().rsplit(b")", 1)[1].split()[19])
        with open("/proc/uptime", "rb") as fh:
            uptime = float(fh.read().split()[0])
        age = uptime - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return now
    return now - min(max(0.0, age), 5.0)  # never more than 5 s: a clock oddity must not zero the budget


class _Recaller:
    """Runs the recalls of one hook: keyword at once, hybrid within the deadline."""

    def __init__(self, store: MemoryStore, options: _Options, scope: ProjectScope,
                 deadline: float) -> None:
        self.store = store
        self.options = options
        self.scope = scope
        self.deadline = deadline  # time.monotonic() value
        self.pending = False
        self.degraded: str | None = None

    def recall(self, query: str) -> tuple[list[Hit], str]:
        query = _clip_query(query)
        mode = self.options.mode
        if mode in ("keyword", "hybrid"):
            return self._recall(query, mode), mode
        keyword = self._recall(query, "keyword")
        if time.monotonic() >= self.deadline:
            return keyword, "keyword"
        box: dict[str, Any] = {}

        def work() -> None:
            try:
                box["hits"] = self._recall(query, "hybrid")
            except BaseException as exc:  # reported below; a thread must not die noisily
                box["error"] = exc

        worker = threading.Thread(target=work, name="memstore-hook-recall", daemon=True)
        worker.start()
        worker.join(max(0.0, self.deadline - time.monotonic()))
        if worker.is_alive():
            self.pending = True
            return keyword, "keyword"
        if "error" in box:
            self.degraded = f"hybrid recall failed, used keyword hits: {box['error']}"
            return keyword, "keyword"
        return box["hits"], "hybrid"

    def _recall(self, query: str, mode: str) -> list[Hit]:
        """Hits worth an agent's attention. Hybrid: those whose cosine similarity reaches
        ``agent.min_similarity`` (a shared word alone is not relevance). Keyword (the
        fallback, with no measure of meaning): those whose bm25 is at least
        ``KEYWORD_RELATIVE`` of the best hit's."""
        hits = self.store.recall(query, CANDIDATES, mode=mode, **self.scope.filters)  # type: ignore[arg-type]
        if mode == "keyword":
            best = min((h.bm25 for h in hits if h.bm25 is not None), default=0.0)
            return [h for h in hits if h.bm25 is not None and h.bm25 <= best * KEYWORD_RELATIVE]
        floor = self.options.min_similarity
        return [h for h in hits if h.similarity is not None and h.similarity >= floor]


# -- rendering ---------------------------------------------------------------------------------


def render_context(header: str, sections: Sequence[tuple[str | None, Sequence[Memory]]],
                   budget: int) -> tuple[str, list[str]]:
    """The context text (at most ``budget`` characters) and the ids it shows: the header,
    then each section's memories in order, each once, until the budget is spent. A memory
    that does not fit whole is shortened when enough room is left, else left out."""
    per_memory = min(MEMORY_CHARS, max(80, budget // 3))
    lines = [header]
    used = len(header)
    shown: list[str] = []
    for title, memories in sections:
        fresh = [m for m in memories if m.id not in shown]
        if not fresh:
            continue
        title_line = f"{title}:" if title else None
        for memory in fresh:
            extra = ([title_line] if title_line and title_line not in lines else [])
            prefix = sum(len(x) + 1 for x in extra)
            line = context_line(memory, per_memory)
            room = budget - used - prefix - 1
            if len(line) > room:
                overhead = len(context_line(memory, 0)) - 1  # the line without its text
                if room - overhead < 40:
                    break
                line = context_line(memory, room - overhead)
                if len(line) > room:  # cannot happen, but the budget is a promise
                    break
            lines.extend(extra)
            lines.append(line)
            used += prefix + len(line) + 1
            shown.append(memory.id)
    if not shown:
        return "", []
    return "\n".join(lines), shown


def _output(event: str, context: str) -> dict[str, Any]:
    return {"hookSpecificOutput": {"hookEventName": EVENTS[event], "additionalContext": context}}


# -- the two hooks -----------------------------------------------------------------------------


def _session_start(store: MemoryStore, data: Mapping[str, Any], recaller: _Recaller,
                   options: _Options) -> tuple[str, list[str], str]:
    scope = recaller.scope
    recent = store.list(limit=CANDIDATES, **scope.filters)
    relevant: list[Memory] = []
    mode = "none"
    if scope.label:
        hits, mode = recaller.recall(scope.label)
        relevant = [h.memory for h in hits]
    where = f" for {scope.label}" if scope.label else ""
    header = (f"Memories from memstore{where} (ids work with the memstore `get` tool or "
              "`memstore get ID`):")
    context, ids = render_context(
        header, [("About this project", relevant[: CANDIDATES // 2]), ("Most recent", recent)],
        options.budget,
    )
    return context, ids, mode


def _prompt(store: MemoryStore, data: Mapping[str, Any], recaller: _Recaller,
            options: _Options) -> tuple[str, list[str], str]:
    prompt = data.get("prompt")
    if prompt is None:
        raise InvalidInputError("UserPromptSubmit input has no prompt")
    if not isinstance(prompt, str):
        raise InvalidInputError("hook input field prompt must be a string")
    if not prompt.strip():
        return "", [], "none"
    hits, mode = recaller.recall(prompt)
    header = ("Memories from memstore that may be relevant (ids work with the memstore `get` "
              "tool or `memstore get ID`):")
    context, ids = render_context(header, [(None, [h.memory for h in hits])], options.budget)
    return context, ids, mode


_HOOKS: dict[str, Callable[..., tuple[str, list[str], str]]] = {
    "session-start": _session_start,
    "prompt": _prompt,
}


def run_hook(
    event: str,
    raw: bytes | str,
    *,
    settings: Settings | None = None,
    overrides: Mapping[str, Any] | None = None,
    opener: Callable[[Settings], MemoryStore] | None = None,
    started: float | None = None,
) -> HookResult:
    """Run one hook on its raw stdin. Never raises: every failure is logged and gives a
    result without output.

    ``overrides`` are settings given as flags; ``opener`` replaces :func:`memstore.open`
    (tests inject a store with a fake embedder; a store from ``opener`` is the caller's to
    close, one opened here is closed here); ``started`` is the ``time.monotonic()``
    from which ``agent.time_budget_ms`` counts (default: now; the CLI passes its process's
    start, see :func:`process_started`)."""
    result = HookResult(event)
    started = time.monotonic() if started is None else started
    owned = False
    store: MemoryStore | None = None
    try:
        if event not in EVENTS:
            raise InvalidInputError(f"unknown hook event {event!r} (known: {', '.join(EVENTS)})")
        if settings is None:
            settings = load_settings(overrides)
        options = _Options.from_settings(settings)
        deadline = started + options.time_budget
        data = _parse_event(raw, event)
        scope = project_scope(data.get("cwd") or None)  # Claude Code runs hooks in the project
        store = (opener or (lambda s: open_store(settings=s)))(settings)
        owned = opener is None
        recaller = _Recaller(store, options, scope, deadline)
        context, ids, mode = _HOOKS[event](store, data, recaller, options)
        result.context, result.memory_ids, result.recall_mode = context, ids, mode
        result.pending = recaller.pending
        if context:
            result.output = _output(event, context)
        if recaller.degraded:
            _log(settings, event, recaller.degraded)
    except Exception as exc:  # the hook must never break the agent
        result.error = str(exc) if isinstance(exc, MemstoreError) else f"{type(exc).__name__}: {exc}"
        result.output = None
        _log(settings, event, result.error)
    finally:
        if store is not None and owned and not result.pending:
            try:
                store.close()
            except Exception as exc:
                _log(settings, event, f"closing the store: {exc}")
    return result


# -- the log -----------------------------------------------------------------------------------


def log_path(settings: Settings | None = None) -> Path:
    """Where hook errors are logged: ``<store home>/logs/agent-hooks.log``."""
    home = settings.get("home") if settings is not None else None
    return home_dir(home) / "logs" / "agent-hooks.log"


def _log(settings: Settings | None, event: str, message: str) -> None:
    """Append one line to the hook log (and stderr, which assistants show in debug views)."""
    stamp = datetime.now().astimezone().isoformat(timespec="seconds")
    line = f"{stamp} {event}: {' '.join(message.split())}"
    with contextlib.suppress(Exception):  # a closed stderr must not break the hook either
        print(f"memstore agent-hook: {line}", file=sys.stderr)
    try:
        path = log_path(settings)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists() and path.stat().st_size > LOG_MAX_BYTES:
            os.replace(path, path.with_name(path.name + ".1"))
        with path.open("a", encoding="utf-8") as fh:
            fh.write(line + "\n")
    except Exception:
        pass
