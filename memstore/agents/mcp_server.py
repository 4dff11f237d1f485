"""memstore's MCP server: the store's tools for agents, over stdio (``memstore mcp``).

The only module that imports the ``mcp`` SDK (installed by the ``memstore[mcp]`` extra).
Start-up stays light so a host's handshake never waits on the store: the store opens on
the first tool call and the embedding model loads on the first embed. Every tool returns
structured JSON (``structuredContent``, described by an output schema) plus a short text
rendering for hosts that only show text; library errors (:class:`memstore.MemstoreError`)
become MCP tool errors (``isError`` results) whose text says what went wrong.
"""

# No `from __future__ import annotations`: the SDK reads the tool signatures at run time.

import functools
import os
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any, Literal

from mcp import types as mcp_types
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field
from typing_extensions import TypedDict

from ..errors import ConflictError, InvalidInputError, MemstoreError, ModelError, NotFoundError, StoreError
from ..render import hit_summary, memory_head, snippet
from ..settings import Settings, load_settings
from ..store import MemoryStore, open_store
from ..version import __version__
from .hooks import project_scope

__all__ = ["build_server", "serve"]

#: Team-store connections the MCP server keeps (tool calls may run in worker threads).
MCP_POOL_SIZE = 4

#: Characters of a memory's text shown per item in the text rendering of recall and list
#: (the structured result always carries the whole text; ``get`` shows it whole too).
SNIPPET_CHARS = 500

INSTRUCTIONS = (
    "memstore is the user's long-term memory: decisions, learnings, commit messages and notes, "
    "kept across sessions on this machine. Call `recall` before starting a task to see what is "
    "already known; call `capture` after finishing one to keep what was decided or learned "
    "(one self-contained fact per memory, with a namespace such as 'decisions' or 'learnings'). "
    "Every memory has an id: pass it to `get`, `update` or `forget`."
)


# -- output schemas ----------------------------------------------------------------------------


class MemoryOut(TypedDict):
    """One memory, as stored (timestamps are ISO 8601 UTC)."""

    id: str
    text: str
    namespace: str
    tags: list[str]
    source: str | None
    metadata: dict[str, Any]
    created_at: str
    updated_at: str
    project: str | None
    branch: str | None
    deleted: bool


class CaptureOut(MemoryOut):
    """The stored memory and what the capture did."""

    created: bool
    notices: list[str]


class HitOut(MemoryOut):
    """A recalled memory with the evidence behind its rank."""

    score: float
    keyword_rank: int | None
    vector_rank: int | None
    similarity: float | None


class RecallOut(TypedDict):
    """Memories most relevant to the query, best first."""

    query: str
    mode: str
    hits: list[HitOut]


class ListOut(TypedDict):
    """Memories, newest first."""

    memories: list[MemoryOut]


class StatsOut(TypedDict):
    """Counts, sizes, model and index state of the store."""

    memories: int
    stats: dict[str, Any]


# -- helpers -----------------------------------------------------------------------------------


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
        raise ToolError(f"{kind}: {exc}") from exc


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
    app = MCPServer(
        "memstore", title="memstore", version=__version__, instructions=INSTRUCTIONS,
        description="Personal memory store with offline semantic recall.",
    )

    @app.tool(annotations=_annotations("Capture a memory", read_only=False, idempotent=True))
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
    ) -> Annotated[mcp_types.CallToolResult, CaptureOut]:
        """Store a memory. Capturing the same text again into the same namespace returns the
        existing memory (created: false) instead of storing it twice."""
        with _tool_errors():
            result = store().capture(text, namespace=namespace, tags=tags, metadata=metadata,
                                     source=source, **scope().capture)
        verb = "stored" if result.created else "already stored"
        lines = [f"{verb} {memory_head(result, expiry=False)}", *result.notices]
        return _result("\n".join(lines), result.to_dict())

    @app.tool(annotations=_annotations("Recall memories", read_only=True))
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
        all_projects: AllProjects = False,
    ) -> Annotated[mcp_types.CallToolResult, RecallOut]:
        """Find memories by meaning and keyword, best first. Each hit has its id, text, fused
        score and the evidence (keyword rank, vector rank, cosine similarity)."""
        limit = limit if limit is not None else settings["recall.limit"]
        mode = mode or settings["recall.mode"]
        with _tool_errors():
            hits = store().recall(query, limit, namespace=namespace, tags=tags, since=since,
                                  until=until, mode=mode,  # type: ignore[arg-type]
                                  **({} if all_projects else scope().filters))
        text = "\n".join(hit_summary(rank, hit, SNIPPET_CHARS) for rank, hit in enumerate(hits, start=1))
        return _result(text or "no memories found",
                       {"query": query, "mode": mode, "hits": [hit.to_dict() for hit in hits]})

    @app.tool(annotations=_annotations("Get a memory", read_only=True))
    def get(id: Id) -> Annotated[mcp_types.CallToolResult, MemoryOut]:  # noqa: A002
        """One memory with its whole text and metadata (forgotten and superseded ones too)."""
        with _tool_errors():
            memory = store().get(id)
        return _result(f"{memory_head(memory, expiry=False)}\n{memory.text}", memory.to_dict())

    @app.tool(annotations=_annotations("Update a memory", read_only=False))
    def update(
        id: Id,  # noqa: A002
        text: Annotated[str | None, Field(description="The corrected text.")] = None,
        tags: Annotated[list[str] | None, Field(description="The new tags (replace the old "
                                                            "ones).")] = None,
        metadata: Annotated[dict[str, Any] | None, Field(description="The new metadata "
                                                                    "(replaces the old).")]
        = None,
    ) -> Annotated[mcp_types.CallToolResult, CaptureOut]:
        """Correct a memory: writes a new version and keeps the old one as superseded
        (its history stays). Returns the new version, which has a new id."""
        if text is None and tags is None and metadata is None:
            raise ToolError("invalid input: give text, tags or metadata to change")
        with _tool_errors():
            memory = store().update(id, text=text, tags=tags, metadata=metadata)
        if not memory.created:
            return _result(f"nothing to change: {memory_head(memory, expiry=False)}", memory.to_dict())
        return _result(f"updated {id} -> {memory_head(memory, expiry=False)}", memory.to_dict())

    @app.tool(annotations=_annotations("Forget a memory", read_only=False, destructive=True,
                                       idempotent=True))
    def forget(id: Id) -> Annotated[mcp_types.CallToolResult, MemoryOut]:  # noqa: A002
        """Forget a memory: it disappears from recall and list. It is a tombstone, not an
        erasure: the user can still see it until they purge."""
        with _tool_errors():
            memory = store().forget(id)
        return _result(f"forgot {memory.id}", memory.to_dict())

    @app.tool(name="list", annotations=_annotations("List memories", read_only=True))
    def list_memories(
        limit: Annotated[int, Field(ge=1, le=1000, description="Most memories to return.")] = 20,
        offset: Annotated[int, Field(ge=0, description="Skip this many (for paging).")] = 0,
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

    @app.tool(annotations=_annotations("Store statistics", read_only=True))
    def stats() -> Annotated[mcp_types.CallToolResult, StatsOut]:
        """How many memories the store holds, per namespace, and its model and index state."""
        with _tool_errors():
            data = store().stats()
        namespaces = ", ".join(f"{ns} {n}" for ns, n in data.get("namespaces", {}).items())
        text = (f"{data['memories']} memories ({namespaces or 'none'}); "
                f"model {data['model']['model_id']}; {data['index']['vectors']} vectors indexed")
        return _result(text, {"memories": data["memories"], "stats": data})

    return app


def serve(settings: Settings | None = None) -> None:
    """Run the server on stdin/stdout until the client closes it, then close the store
    (saving its vector index). The store opens on the first tool call, not before."""
    settings = settings if settings is not None else load_settings()
    store = _LazyStore(lambda: open_store(settings=settings, pool_size=MCP_POOL_SIZE))
    try:
        build_server(store, settings).run("stdio")
    finally:
        store.close()
