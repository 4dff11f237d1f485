"""memstore's MCP server: the store's tools for agents, over stdio (``memstore mcp``).

The only module that imports the ``mcp`` SDK (installed by the ``memstore[mcp]`` extra).
Start-up stays light so a host's handshake never waits on the store: the store opens on
the first tool call and the embedding model loads on the first embed. Every tool returns
structured JSON (``structuredContent``, described by an output schema) plus a short text
rendering for hosts that only show text; library errors (:class:`memstore.MemstoreError`)
become MCP tool errors (``isError`` results) whose text says what went wrong.

Arguments are checked strictly: an argument a tool does not take is refused (an agent that
misspells ``ttl`` must not get a memory that never expires), and a bad value is one line naming
it, not the SDK's validation dump. Over stdio a request nested deeper than
:data:`MAX_JSON_DEPTH` is answered with a JSON-RPC error before the SDK parses it.
"""

# No `from __future__ import annotations`: the SDK reads the tool signatures at run time.

import functools
import inspect
import json
import logging
import os
import re
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any, Literal

from mcp import types as mcp_types
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError, UnexpectedToolError
from pydantic import ConfigDict, Field, ValidationError
from typing_extensions import TypedDict

from ..errors import ConflictError, InvalidInputError, MemstoreError, ModelError, NotFoundError, StoreError
from ..models import CaptureResult, Memory
from ..render import hit_summary, memory_head, snippet
from ..settings import Settings, load_settings
from ..store import MemoryStore, open_store
from ..timeutil import now
from ..version import __version__
from .hooks import project_scope

__all__ = ["build_server", "serve"]

#: Team-store connections the MCP server keeps (tool calls may run in worker threads).
MCP_POOL_SIZE = 4

#: Characters of a memory's text shown per item in the text rendering of recall and list
#: (the structured result always carries the whole text; ``get`` shows it whole too).
SNIPPET_CHARS = 500

#: Deepest JSON nesting a request may have. Deeper requests are refused with a JSON-RPC
#: error before the SDK parses them (its parser gives up near 200 levels and drops the
#: request without a reply, so the host would wait for ever).
MAX_JSON_DEPTH = 64

#: Largest ``offset`` of ``list`` (SQLite integers are 64-bit; no store is this big).
MAX_OFFSET = 10**12

INSTRUCTIONS = (
    "memstore is the user's long-term memory: decisions, learnings, commit messages and notes, "
    "kept across sessions on this machine. Call `recall` before starting a task to see what is "
    "already known; call `capture` after finishing one to keep what was decided or learned "
    "(one self-contained fact per memory, with a namespace such as 'decisions' or 'learnings'). "
    "Every memory has an id: pass it to `get`, `update`, `history`, `forget` or `restore`. "
    "A capture that says `stored: false` stored nothing (a near-duplicate is already kept): "
    "update that memory if the new text corrects it, or capture with `allow_duplicate`."
)


# -- output schemas ----------------------------------------------------------------------------
# Every key a result carries is declared (a test compares them with real results).


class MemoryOut(TypedDict):
    """One memory, as stored (timestamps are ISO 8601 UTC; null when unset)."""

    id: str
    text: str
    namespace: str
    tags: list[str]
    source: str | None
    metadata: dict[str, Any]
    content_hash: str
    created_at: str
    updated_at: str
    project: str | None
    branch: str | None
    expires_at: str | None
    deleted: bool
    supersedes: str | None
    superseded_by: str | None
    deleted_at: str | None


class CaptureOut(MemoryOut):
    """The memory and what the capture did. ``stored`` is false when nothing was stored
    (``reason`` says why, e.g. "near-duplicate"; the memory shown is the existing one)."""

    stored: bool
    reason: str | None
    created: bool
    notices: list[str]
    near_duplicate_of: str | None
    similarity: float | None
    redacted: list[str]


class HitOut(MemoryOut):
    """A recalled memory with the evidence behind its rank."""

    score: float
    keyword_rank: int | None
    vector_rank: int | None
    similarity: float | None
    bm25: float | None


class RecallOut(TypedDict):
    """Memories most relevant to the query, best first."""

    query: str
    mode: str
    min_similarity: float | None
    hits: list[HitOut]


class ListOut(TypedDict):
    """Memories, newest first."""

    memories: list[MemoryOut]


class VersionOut(MemoryOut):
    """One version of a memory and its status: current, superseded, forgotten or expired."""

    status: str


class HistoryOut(TypedDict):
    """Every version of a memory, oldest first."""

    versions: list[VersionOut]


class StatsOut(TypedDict):
    """Counts, sizes, model and index state of the store."""

    memories: int
    stats: dict[str, Any]


# -- helpers -----------------------------------------------------------------------------------

log = logging.getLogger(__name__)

_ERROR_KINDS: tuple[tuple[type[MemstoreError], str], ...] = (
    (ConflictError, "conflict"),
    (InvalidInputError, "invalid input"),
    (NotFoundError, "not found"),
    (StoreError, "store error"),
    (ModelError, "model error"),
)


@contextmanager
def _tool_errors() -> Iterator[None]:
    """Turn a library error into an MCP tool error the agent can read and act on."""
    try:
        yield
    except MemstoreError as exc:
        kind = next((label for cls, label in _ERROR_KINDS if isinstance(exc, cls)), None)
        if kind is None:  # an error class added later: its name, e.g. "quota exceeded"
            name = type(exc).__name__.removesuffix("Error")
            kind = "error" if name in ("", "Memstore") else re.sub(r"(?<!^)(?=[A-Z])", " ", name).lower()
        raise ToolError(f"{kind}: {_one_line(str(exc))}") from exc
    except (OverflowError, RecursionError) as exc:  # a value beyond what dates/SQLite can hold
        raise ToolError(f"invalid input: a value is out of range ({_one_line(str(exc))})") from exc


def _one_line(text: str, limit: int = 500) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _validation_line(exc: ValidationError, accepted: list[str]) -> str:
    """A pydantic validation error as one line that names each bad argument."""
    problems: dict[str, str] = {}
    for error in exc.errors(include_url=False):
        loc = [str(part) for part in error.get("loc", ())]
        name = loc[0] if loc else "arguments"
        if error.get("type") == "extra_forbidden":
            problems.setdefault(name, f"unknown argument {name!r} (this tool takes: {', '.join(accepted)})")
        else:
            message = str(error.get("msg", "is not valid"))
            problems.setdefault(name, f"{name}: {message[:1].lower()}{message[1:]}")
    return _one_line("invalid input: " + "; ".join(problems.values()))


class _LazyStore:
    """Opens the store on first use, once, from whichever worker thread asks first."""

    def __init__(self, opener: Callable[[], MemoryStore]) -> None:
        self._opener = opener
        self._store: MemoryStore | None = None
        self._lock = threading.Lock()

    def __call__(self) -> MemoryStore:
        with self._lock:
            if self._store is None:
                self._store = self._opener()
            return self._store

    def close(self) -> None:
        with self._lock:
            if self._store is not None:
                self._store.close()
                self._store = None


def _head(memory: Memory) -> str:
    return memory_head(memory)


def _snippet(text: str) -> str:
    return snippet(text, SNIPPET_CHARS)


def _capture_text(result: CaptureResult, verb: str = "stored") -> str:
    if not result.stored:
        lines = [
            f"not stored: a near-duplicate is already kept (cosine {result.similarity:.3f}): "
            f"{_head(result)}",
            f"   {_snippet(result.text)}",
            f"If the new text corrects it, call update with id {result.id} (or capture with "
            f"supersedes: {result.id}); to keep both, capture again with allow_duplicate: true.",
        ]
        return "\n".join(lines)
    if not result.created:
        verb = "already stored"
    elif result.supersedes:
        verb = f"{verb} (supersedes {result.supersedes})"
    return "\n".join([f"{verb} {_head(result)}", *result.notices])


def _status(memory: Memory) -> str:
    if memory.deleted:
        return "forgotten"
    if memory.superseded_by is not None:
        return "superseded"
    if memory.expired(now()):
        return "expired"
    return "current"


def _result(text: str, data: dict[str, Any]) -> mcp_types.CallToolResult:
    return mcp_types.CallToolResult(
        content=[mcp_types.TextContent(type="text", text=text)], structured_content=data
    )


def _annotations(title: str, *, read_only: bool, destructive: bool = False,
                 idempotent: bool = False) -> mcp_types.ToolAnnotations:
    return mcp_types.ToolAnnotations(
        title=title, read_only_hint=read_only, destructive_hint=destructive,
        idempotent_hint=idempotent, open_world_hint=False,
    )


class _Server(MCPServer):
    """MCPServer whose tools refuse unknown arguments and report bad ones in one line."""

    def tool_of(self, fn: Callable[..., Any], *, name: str | None = None,
                annotations: mcp_types.ToolAnnotations) -> None:
        """Register ``fn`` as a tool: its docstring (dedented) is the description, and its
        argument model forbids arguments the signature does not name."""
        name = name or fn.__name__
        self.add_tool(fn, name=name, description=inspect.cleandoc(fn.__doc__ or ""),
                      annotations=annotations)
        tool = self._tool_manager.get_tool(name)
        assert tool is not None
        base = tool.fn_metadata.arg_model
        strict = type(base.__name__, (base,), {
            "model_config": ConfigDict(arbitrary_types_allowed=True, extra="forbid"),
            "__module__": base.__module__,
        })
        tool.fn_metadata.arg_model = strict
        tool.parameters = strict.model_json_schema(by_alias=True)

    async def call_tool(self, name: str, arguments: dict[str, Any], context: Any = None) -> Any:
        try:
            return await super().call_tool(name, arguments, context)
        except UnexpectedToolError:
            raise
        except ToolError as exc:
            cause = exc.__cause__
            if isinstance(cause, ValidationError):
                tool = self._tool_manager.get_tool(name)
                accepted = sorted(tool.parameters.get("properties", {})) if tool else []
                raise ToolError(_validation_line(cause, accepted)) from cause
            if isinstance(cause, ToolError):  # ours, from the tool body: its text, unprefixed
                raise ToolError(str(cause)) from cause
            raise


# -- the server --------------------------------------------------------------------------------

Id = Annotated[str, Field(description="A memory id, as returned by capture, recall or list.")]
Namespaces = Annotated[
    str | list[str] | None,
    Field(description="Only memories in this namespace (or any of these namespaces)."),
]
TagsFilter = Annotated[list[str] | None, Field(description="Only memories carrying all of these tags.")]
Since = Annotated[
    str | None,
    Field(description="Only memories created since: ISO 8601 (2024-05-01), 'today', 'yesterday', "
                      "or a duration ago such as '7d' or '12h'."),
]
Until = Annotated[str | None, Field(description="Only memories created before this time (same forms).")]
AllProjects = Annotated[
    bool,
    Field(description="Search every project's memories. By default, inside a git repository, "
                      "only its project's memories and those with no project."),
]
Ttl = Annotated[str | None, Field(description="Expire after this long: '90m', '12h', '7d', '2w', '1y'.")]
ExpiresAt = Annotated[str | None, Field(description="Expire at this time (ISO 8601, in the future).")]


def build_server(store: Callable[[], MemoryStore], settings: Settings) -> MCPServer:
    """The MCP server with memstore's tools. Each tool call asks ``store()`` for the store
    (which should open it once, on first use, and then return the same one); ``settings``
    give the recall defaults. The caller closes the store when the server stops."""
    # Hosts start the server in the project's directory: inside a git repository, captures
    # record its project and branch, and recall and list default to its memories (plus those
    # with no project), as `memstore capture` and `memstore recall` do there.
    # Detected on the first tool call (git runs then), not during the handshake.
    cwd = os.getcwd()
    scope = functools.cache(lambda: project_scope(cwd))
    app = _Server(
        "memstore", title="memstore", version=__version__, instructions=INSTRUCTIONS,
        description="Personal memory store with offline semantic recall.",
    )

    def capture(
        text: Annotated[str, Field(description="The memory: one self-contained fact, decision or "
                                               "learning (at most 64 KiB).")],
        namespace: Annotated[str | None, Field(description="Namespace, e.g. 'decisions', "
                                                           "'learnings' (default: the user's default).")]
        = None,
        tags: Annotated[list[str] | None, Field(description="Tags, e.g. ['db', 'ci'].")] = None,
        metadata: Annotated[dict[str, Any] | None, Field(description="Any JSON object to keep "
                                                                    "with the memory.")] = None,
        source: Annotated[str, Field(description="Where the memory came from.")] = "mcp",
        allow_duplicate: Annotated[bool, Field(description="Store it even when a live memory says "
                                                           "nearly the same (a near-duplicate).")]
        = False,
        supersedes: Annotated[str | None, Field(description="Store it as the new version of this "
                                                            "memory id (like update; the old "
                                                            "version's tags and metadata are kept "
                                                            "unless given).")] = None,
        ttl: Ttl = None,
        expires_at: ExpiresAt = None,
    ) -> Annotated[mcp_types.CallToolResult, CaptureOut]:
        """Store a memory.

        Capturing the same text again into the same namespace returns the existing memory
        (created: false). A text that nearly duplicates a live memory is not stored
        (stored: false, reason "near-duplicate", near_duplicate_of: its id): update that
        memory if the new text corrects it, or pass allow_duplicate: true to keep both.
        """
        with _tool_errors():
            result = store().capture(text, namespace=namespace, tags=tags, metadata=metadata,
                                     source=source, allow_duplicate=allow_duplicate,
                                     supersedes=supersedes, ttl=ttl, expires_at=expires_at,
                                     **({} if supersedes else scope().capture))
        return _result(_capture_text(result), result.to_dict())

    def recall(
        query: Annotated[str, Field(description="What to look for, in plain words.")],
        limit: Annotated[int | None, Field(ge=1, le=100, description="Most hits to return "
                                                                     "(default: the user's setting, 10).")]
        = None,
        namespace: Namespaces = None,
        tags: TagsFilter = None,
        since: Since = None,
        until: Until = None,
        mode: Annotated[Literal["hybrid", "keyword", "semantic"] | None,
                        Field(description="hybrid (meaning + keywords, the default), keyword or "
                                          "semantic.")] = None,
        min_similarity: Annotated[float | None, Field(ge=-1, le=1, description=(
            "Leave out hits whose cosine similarity to the query is below this (e.g. 0.3; "
            "default: the user's recall.min_similarity setting). Not used in keyword mode."))] = None,
        all_projects: AllProjects = False,
    ) -> Annotated[mcp_types.CallToolResult, RecallOut]:
        """Find memories by meaning and keyword, best first.

        Each hit has its id, text, fused score and the evidence (keyword rank, vector rank,
        cosine similarity, bm25). Use min_similarity to drop weak matches.
        """
        limit = limit if limit is not None else settings["recall.limit"]
        mode = mode or settings["recall.mode"]
        with _tool_errors():
            hits = store().recall(query, limit, namespace=namespace, tags=tags, since=since,
                                  until=until, mode=mode,  # type: ignore[arg-type]
                                  min_similarity=min_similarity,
                                  **({} if all_projects else scope().filters))
        text = "\n".join(hit_summary(rank, hit, SNIPPET_CHARS) for rank, hit in enumerate(hits, start=1))
        floor = min_similarity if min_similarity is not None else settings["recall.min_similarity"]
        return _result(text or "no memories found",
                       {"query": query, "mode": mode, "min_similarity": floor,
                        "hits": [hit.to_dict() for hit in hits]})

    def get(id: Id) -> Annotated[mcp_types.CallToolResult, MemoryOut]:  # noqa: A002
        """One memory with its whole text and metadata (forgotten and superseded ones too)."""
        with _tool_errors():
            memory = store().get(id)
        return _result(f"{memory_head(memory, expiry=False)}\n{memory.text}", memory.to_dict())

    def update(
        id: Id,  # noqa: A002
        text: Annotated[str | None, Field(description="The corrected text.")] = None,
        tags: Annotated[list[str] | None, Field(description="The new tags (replace the old "
                                                            "ones).")] = None,
        metadata: Annotated[dict[str, Any] | None, Field(description="The new metadata "
                                                                    "(replaces the old).")]
        = None,
        ttl: Ttl = None,
        expires_at: ExpiresAt = None,
    ) -> Annotated[mcp_types.CallToolResult, CaptureOut]:
        """Correct a memory.

        Writes a new version and keeps the old one as superseded (see history). Returns the
        new version, which has a new id. Fields not given are carried over.
        """
        if text is None and tags is None and metadata is None and ttl is None and expires_at is None:
            raise ToolError("invalid input: give text, tags, metadata, ttl or expires_at to change")
        changes: dict[str, Any] = {"ttl": ttl}
        if expires_at is not None:
            changes["expires_at"] = expires_at
        with _tool_errors():
            memory = store().update(id, text=text, tags=tags, metadata=metadata, **changes)
        if not memory.created:
            return _result(f"nothing to change: {memory_head(memory, expiry=False)}", memory.to_dict())
        return _result(f"updated {id} -> {memory_head(memory, expiry=False)}", memory.to_dict())

    def forget(id: Id) -> Annotated[mcp_types.CallToolResult, MemoryOut]:  # noqa: A002
        """Forget a memory: it disappears from recall and list.

        It is a tombstone, not an erasure: restore brings it back until the user purges.
        """
        with _tool_errors():
            memory = store().forget(id)
        return _result(f"forgot {memory.id}", memory.to_dict())

    def restore(id: Id) -> Annotated[mcp_types.CallToolResult, MemoryOut]:  # noqa: A002
        """Bring back a forgotten memory (before it is purged); it is recalled again."""
        with _tool_errors():
            memory = store().restore(id)
        return _result(f"restored {_head(memory)}", memory.to_dict())

    def history(id: Id) -> Annotated[mcp_types.CallToolResult, HistoryOut]:  # noqa: A002
        """Every version of a memory, oldest first, from the id of any version.

        Each version has a status: current, superseded, forgotten or expired.
        """
        with _tool_errors():
            versions = store().history(id)
        lines = [f"v{n} {_status(m)}: {_head(m)}\n   {_snippet(m.text)}"
                 for n, m in enumerate(versions, start=1)]
        return _result("\n".join(lines),
                       {"versions": [{**m.to_dict(), "status": _status(m)} for m in versions]})

    def list_memories(
        limit: Annotated[int, Field(ge=1, le=1000, description="Most memories to return.")] = 20,
        offset: Annotated[int, Field(ge=0, le=MAX_OFFSET, description="Skip this many (for paging).")]
        = 0,
        namespace: Namespaces = None,
        tags: TagsFilter = None,
        since: Since = None,
        until: Until = None,
        all_projects: AllProjects = False,
    ) -> Annotated[mcp_types.CallToolResult, ListOut]:
        """List memories, newest first, optionally filtered."""
        with _tool_errors():
            memories = store().list(limit=limit, offset=offset, namespace=namespace, tags=tags,
                                    since=since, until=until, **({} if all_projects else scope().filters))
        text = "\n".join(
            f"{memory_head(m, expiry=False)}\n   {snippet(m.text, SNIPPET_CHARS)}" for m in memories
        )
        return _result(text or "no memories", {"memories": [m.to_dict() for m in memories]})

    def stats() -> Annotated[mcp_types.CallToolResult, StatsOut]:
        """How many memories the store holds, per namespace, and its model and index state."""
        with _tool_errors():
            data = store().stats()
        namespaces = ", ".join(f"{ns} {n}" for ns, n in data.get("namespaces", {}).items())
        text = (f"{data['memories']} memories ({namespaces or 'none'}); "
                f"model {data['model']['model_id']}; {data['index']['vectors']} vectors indexed")
        return _result(text, {"memories": data["memories"], "stats": data})

    app.tool_of(capture, annotations=_annotations("Capture a memory", read_only=False, idempotent=True))
    app.tool_of(recall, annotations=_annotations("Recall memories", read_only=True))
    app.tool_of(get, annotations=_annotations("Get a memory", read_only=True))
    app.tool_of(update, annotations=_annotations("Update a memory", read_only=False))
    app.tool_of(forget, annotations=_annotations("Forget a memory", read_only=False, destructive=True,
                                                 idempotent=True))
    app.tool_of(restore, annotations=_annotations("Restore a forgotten memory", read_only=False,
                                                  idempotent=True))
    app.tool_of(history, annotations=_annotations("History of a memory", read_only=True))
    app.tool_of(list_memories, name="list", annotations=_annotations("List memories", read_only=True))
    app.tool_of(stats, annotations=_annotations("Store statistics", read_only=True))
    return app


def _start_query_worker(settings: Settings) -> None:
    """A session begins: start the query worker in the background (never fails the server),
    so this session's CLI and hook processes find the model loaded."""
    import contextlib
    import threading

    from ..embedding.resolve import start_query_worker

    def start() -> None:
        with contextlib.suppress(Exception):  # a missing model says so on the first tool call
            start_query_worker(settings.get("model_dir"), settings.get("embedder"), settings.get("model"),
                               query_worker_idle=settings.get("query_worker.idle_seconds", 0))

    threading.Thread(target=start, name="memstore-start-query-worker", daemon=True).start()


# -- stdio -------------------------------------------------------------------------------------

_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}:,]|[^\s"\[\]{},:]+')


def _depth_and_id(line: str) -> tuple[int, Any]:
    """How deep the JSON in ``line`` nests, and the top-level ``id`` member (None if absent),
    without a recursive parser."""
    depth = deepest = 0
    request_id: Any = None
    previous: list[str] = []
    for match in _TOKEN.finditer(line):
        token = match.group()
        if token in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif token in "]}":
            depth -= 1
        elif depth == 1 and previous[-2:] == ['"id"', ":"] and request_id is None:
            try:
                request_id = json.loads(token)
            except ValueError:
                request_id = None
        previous = [*previous[-1:], token]
    return deepest, request_id


class _GuardedStdin:
    """The wire's input lines, minus requests nested too deep to parse safely; each of those
    is answered at once with a JSON-RPC "invalid request" error naming the limit."""

    def __init__(self, source: Any) -> None:
        import anyio

        self._source = source
        self._ready = anyio.Event()
        self._send: Callable[[Any], Any] | None = None

    def reply_with(self, send: Callable[[Any], Any]) -> None:
        self._send = send
        self._ready.set()

    def __aiter__(self) -> AsyncIterator[str]:
        return self._lines()

    async def _lines(self) -> AsyncIterator[str]:
        from mcp.shared.message import SessionMessage
        from mcp_types.jsonrpc import INVALID_REQUEST, ErrorData, JSONRPCError

        async for line in self._source:
            depth, request_id = _depth_and_id(line)
            if depth <= MAX_JSON_DEPTH:
                yield line
                continue
            message = (f"invalid request: JSON nested {depth} levels deep; memstore accepts at most "
                       f"{MAX_JSON_DEPTH} (flatten the metadata)")
            log.info("refused a request nested %d levels deep", depth)
            if isinstance(request_id, (str, int)) and not isinstance(request_id, bool):
                await self._ready.wait()
                assert self._send is not None
                await self._send(SessionMessage(JSONRPCError(
                    jsonrpc="2.0", id=request_id, error=ErrorData(code=INVALID_REQUEST, message=message))))


@contextmanager
def _private_stdin() -> Iterator[Any]:
    """The wire's stdin on a private descriptor, with fd 0 pointing at the null device so no
    child process (git) reads requests meant for the server."""
    import io

    private = os.dup(0)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    stream = io.TextIOWrapper(os.fdopen(private, "rb", closefd=False), encoding="utf-8", errors="replace")
    try:
        yield stream
    finally:
        os.dup2(private, 0)
        os.close(private)


async def _serve_stdio(app: MCPServer) -> None:
    import anyio
    from mcp.server.stdio import stdio_server

    with _private_stdin() as raw:
        guarded = _GuardedStdin(anyio.wrap_file(raw))
        async with stdio_server(stdin=guarded) as (read_stream, write_stream):  # type: ignore[arg-type]
            guarded.reply_with(write_stream.send)
            server = app._lowlevel_server  # the SDK's own run_stdio_async does exactly this
            await server.run(read_stream, write_stream, server.create_initialization_options())


def serve(settings: Settings | None = None) -> None:
    """Run the server on stdin/stdout until the client closes it (or interrupts it: SIGINT
    ends it quietly), then close the store (saving its vector index). The store opens on the
    first tool call, not before."""
    import anyio

    settings = settings if settings is not None else load_settings()
    _start_query_worker(settings)
    store = _LazyStore(lambda: open_store(settings=settings, pool_size=MCP_POOL_SIZE))
    try:
        anyio.run(_serve_stdio, build_server(store, settings))
    except KeyboardInterrupt:
        pass
    finally:
        store.close()
