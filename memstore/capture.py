"""Capture: validation → redaction → exact / near-duplicate decision → versions.

Every input is checked (and secrets redacted) before anything is embedded or written, so bad
input changes nothing. The exact-duplicate check runs again inside the write transaction, so
concurrent writers never store the same text twice in a scope.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from .batch_embed import Embedding, Progress, as_bytes, progress_callback
from .errors import ConflictError, InvalidInputError, ModelError, NotFoundError
from .identity import content_hash, new_id, states_other_numbers
from .models import CaptureResult, Memory
from .notices import notify
from .settings import SETTINGS, Settings
from .storage.base import Backend, Filter, NewMemory
from .timeutil import add, format_ts, now, parse_duration, parse_time
from .validate import clean_metadata, clean_name, clean_tags, clean_text

if TYPE_CHECKING:
    import numpy as np

__all__ = ["CAPTURE_FIELDS", "Capture", "TimeLike", "TtlLike", "clean_id", "current_version", "result"]

TimeLike = str | datetime | date | None
TtlLike = str | timedelta | None
#: Nearest memories a capture is compared with when looking for a near-duplicate.
NEAR_DUPLICATE_CANDIDATES = 5
#: Fields an item of ``capture_many`` may set.
CAPTURE_FIELDS = frozenset({
    "text", "namespace", "tags", "metadata", "source", "project", "branch", "expires_at", "ttl",
    "created_at",
})


class Capture:
    """Writes new memories and new versions through a backend."""

    def __init__(self, backend: Backend, embedding: Embedding, settings: Settings) -> None:
        self.backend = backend
        self.embedding = embedding
        self.settings = settings

    # -- preparing rows ----------------------------------------------------------------------

    def redacting(self, redact: bool | None) -> bool:
        if redact is None:
            return bool(self.settings.get("redact"))
        if not isinstance(redact, bool):
            raise InvalidInputError(f"redact must be True, False or None, not {redact!r}")
        return redact

    def prepare(
        self, text: Any, *, namespace: str | None = None, tags: Iterable[str] | str | None = None,
        metadata: Mapping[str, Any] | None = None, source: str | None = None,
        project: str | None = None, branch: str | None = None, expires_at: TimeLike = None,
        ttl: TtlLike = None, created_at: TimeLike = None, redact: bool | None = None,
    ) -> tuple[NewMemory, tuple[str, ...]]:
        """A validated, redacted row and the kinds of secret redacted."""
        text = clean_text(text)
        meta = clean_metadata(metadata)
        names: dict[str, Any] = {
            "namespace": clean_name(namespace, "namespace") or clean_name(
                self.settings.get("default_namespace"),
                "namespace (setting default_namespace)", allow_none=False,
            ),
            "tags": clean_tags(tags),
            "source": clean_name(source, "source"),
            "project": clean_name(project, "project"),
            "branch": clean_name(branch, "branch"),
        }
        redacted: tuple[str, ...] = ()
        if self.redacting(redact):  # before hashing and embedding: no secret reaches the backend
            text, meta, redacted = redact_secrets(text, meta)
            names, in_names = redact_names(names)
            redacted += in_names
        ns, project = names["namespace"], names["project"]
        expires = expiry(expires_at, ttl)
        created = parse_time(created_at, field="created_at") if created_at is not None else None
        stamp = format_ts(now())
        row = NewMemory(
            id=new_id(), text=text, namespace=ns, tags=tuple(names["tags"]), metadata=meta,
            content_hash=content_hash(text, ns, project), created_at=format_ts(created) if created else stamp,
            updated_at=stamp, source=names["source"], project=project,
            branch=names["branch"], expires_at=format_ts(expires) if expires else None,
        )
        return row, redacted

    def require_embedder(self) -> None:
        """Resolve the embedder before anything is written: a chosen backend that is not
        installed (or a model that cannot be found) refuses the capture, instead of storing
        memories without vectors. (A model that fails while embedding still stores the memory,
        without a vector and with a notice; ``reindex`` embeds it later.)"""
        try:
            self.embedding.embedder  # noqa: B018 - resolves it
        except ModelError as exc:
            raise ModelError(f"not stored: {exc}") from exc

    def prepare_item(self, item: Any, *, namespace: str | None = None,
                     tags: Iterable[str] | str | None = None, redact: bool | None = None,
                     ) -> tuple[NewMemory, tuple[str, ...]]:
        """One ``capture_many`` item (a text, or a mapping of CAPTURE_FIELDS) as :meth:`prepare`
        makes it; ``namespace``/``tags`` are defaults for an item that does not set them."""
        if isinstance(item, (str, bytes)):
            fields: dict[str, Any] = {"text": item}
        elif isinstance(item, Mapping):
            unknown = set(item) - CAPTURE_FIELDS
            if unknown:
                raise InvalidInputError(f"unknown field(s) {', '.join(sorted(map(str, unknown)))}")
            if "text" not in item:
                raise InvalidInputError("missing field 'text'")
            fields = dict(item)
        else:
            raise InvalidInputError(f"expected a string or a mapping, not {type(item).__name__}")
        fields.setdefault("namespace", namespace)
        fields.setdefault("tags", tags)
        return self.prepare(**fields, redact=redact)

    # -- new memories ------------------------------------------------------------------------

    def capture(self, text: str, *, supersedes: str | None = None, allow_duplicate: bool = False,
                embed: bool = True, **fields: Any) -> CaptureResult:
        if supersedes is not None:
            old = current_version(self.backend, clean_id(supersedes))
            fields["namespace"] = fields.get("namespace") or old.namespace
            # like update: what is not given is carried over from the old version
            for name in ("project", "branch", "tags", "metadata", "source"):
                if fields.get(name) is None:
                    fields[name] = getattr(old, name)
            fields.pop("created_at", None)
            row, kinds = self.prepare(text, **fields)
            return with_redactions(self.write_version(old, row), kinds)
        row, kinds = self.prepare(text, **fields)
        near = None if allow_duplicate else self.near_duplicate_threshold()
        return with_redactions(self.capture_rows([row], near=near, embed=embed)[0], kinds)

    def capture_many(
        self, items: Iterable[str | Mapping[str, Any]], *, namespace: str | None = None,
        tags: Iterable[str] | str | None = None, batch_size: int | None = None,
        progress: Progress | bool | None = None, embed: bool = True, redact: bool | None = None,
    ) -> list[CaptureResult]:
        if batch_size is None:
            batch_size = int(self.settings.get("batch_size"))
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidInputError("batch_size must be a positive integer")
        redact = self.redacting(redact)
        prepared = []
        for position, item in enumerate(items):
            try:
                prepared.append(self.prepare_item(item, namespace=namespace, tags=tags, redact=redact))
            except InvalidInputError as exc:
                raise InvalidInputError(f"item {position}: {exc}") from None
        rows = [row for row, _ in prepared]
        callback = progress_callback(progress, len(rows), "capturing")
        results: list[CaptureResult] = []
        try:
            for start in range(0, len(rows), batch_size):
                results.extend(self.capture_rows(rows[start : start + batch_size], embed=embed))
                if callback:
                    callback(len(results), len(rows))
        finally:
            if callback is not None and hasattr(callback, "close"):
                callback.close()
        return [with_redactions(r, k) for r, (_, k) in zip(results, prepared, strict=True)]

    def capture_rows(self, rows: Sequence[NewMemory], *, near: float | None = None,
                     embed: bool = True) -> list[CaptureResult]:
        """Store rows not already live in their scope (one transaction), embedded unless
        ``embed`` is False; near-duplicates skipped when ``near`` is a threshold."""
        backend = self.backend
        results: dict[int, CaptureResult] = {}
        fresh: list[int] = []
        first_of: dict[str, int] = {}
        repeats: list[int] = []
        for i, row in enumerate(rows):
            existing = backend.find_live(row.content_hash)
            if existing is not None:
                results[i] = result(existing, created=False)
            elif row.content_hash in first_of:
                repeats.append(i)
            else:
                first_of[row.content_hash] = i
                fresh.append(i)
        vectors = None
        notices: tuple[str, ...] = ()
        if fresh and embed:
            self.require_embedder()
            try:
                vectors = self.embedding.embed([rows[i].text for i in fresh])
            except ModelError as exc:
                notices = (f"stored without a vector ({exc}); run `memstore reindex` later",)
        if near is not None and vectors is not None:
            fresh, vectors = self._skip_near_duplicates(rows, fresh, vectors, near, results)
        model = self.embedding.model_id if vectors is not None else None
        # A backend shared by several machines (PostgreSQL) serialises near-duplicate decisions
        # per scope with a lock held to the end of the write, and they are made again under it:
        # two writers of nearly the same text cannot both miss each other.
        lock_scope = getattr(backend, "lock_scope", None) if vectors is not None else None
        look_again = not backend.resolves_duplicates  # (else insert() answers with the live one)
        with backend.write():
            for n, i in enumerate(fresh):
                row = rows[i]
                again = backend.find_live(row.content_hash) if look_again else None
                if again is not None:  # another process stored it since we looked
                    results[i] = result(again, created=False)
                    continue
                if lock_scope is not None and near is not None and vectors is not None:
                    lock_scope(row.namespace, row.project)
                    if self._skip_near_duplicates(rows, [i], vectors[n:n + 1], near, results)[0] == []:
                        continue
                vector = (model, as_bytes(vectors[n])) if vectors is not None and model else None
                stored = backend.insert(row, vector)
                # (An id other than the row's: a concurrent writer stored the same text first.)
                created = stored.id == row.id
                results[i] = result(stored, created=created, notices=notices if created else ())
        for i in repeats:
            results[i] = result(results[first_of[rows[i].content_hash]], created=False)
        return [results[i] for i in range(len(rows))]

    # -- versions ----------------------------------------------------------------------------

    def update(self, memory_id: str, text: str | None, *, tags: Any, metadata: Any, source: Any,
               expiry_fields: dict[str, Any], redact: bool | None) -> CaptureResult:
        old = current_version(self.backend, clean_id(memory_id))
        kinds: tuple[str, ...] = ()
        if self.redacting(redact) and (text is not None or metadata is not None):
            text, metadata, kinds = redact_secrets(
                None if text is None else clean_text(text),
                None if metadata is None else clean_metadata(metadata),
            )
        if self.redacting(redact) and (tags is not None or source is not None):
            new_names, in_names = redact_names({
                "tags": clean_tags(tags) if tags is not None else (),
                "source": clean_name(source, "source"),
            })
            kinds += in_names
            tags = new_names["tags"] if tags is not None else None
            source = new_names["source"]
        row, _ = self.prepare(
            old.text if text is None else text, namespace=old.namespace,
            tags=old.tags if tags is None else tags,
            metadata=old.metadata if metadata is None else metadata,
            source=old.source if source is None else source, project=old.project, branch=old.branch,
            redact=False, **expiry_fields,
        )
        if not expiry_fields:
            row = replace(row, expires_at=format_ts(old.expires_at) if old.expires_at else None)
        unchanged = (
            row.text == old.text and row.tags == tuple(old.tags) and row.metadata == old.metadata
            and row.source == old.source
            and row.expires_at == (format_ts(old.expires_at) if old.expires_at else None)
        )
        if unchanged:
            return result(old, created=False, notices=("nothing to change",))
        return with_redactions(self.write_version(old, row), kinds)

    def write_version(self, old: Memory, row: NewMemory) -> CaptureResult:
        """Store ``row`` as the version after ``old``, in one transaction."""
        if row.expires_at is not None and row.expires_at <= format_ts(now()):
            raise ConflictError(
                f"memory {old.id} expired at {row.expires_at}; give a new ttl or expires_at=None "
                "to update it", memory_id=old.id,
            )
        backend = self.backend
        model = self.embedding.model_id
        vector: bytes | None = None
        notices: tuple[str, ...] = ()
        if row.content_hash == old.content_hash:
            stored = backend.vectors_of([old.id]).get(old.id)
            if stored is not None and stored[0] == model:
                vector = stored[2]  # same text in the same scope: same vector
        if vector is None:
            self.require_embedder()
            try:
                vector = as_bytes(self.embedding.embed([row.text])[0])
            except ModelError as exc:
                notices = (f"stored without a vector ({exc}); run `memstore reindex` later",)
        row = replace(row, supersedes=old.id)
        with backend.write():
            found = backend.get(old.id)
            if found is None:
                raise NotFoundError(old.id)
            check_current(backend, found)
            clash = backend.find_live(row.content_hash, except_id=old.id)
            if clash is not None:
                raise ConflictError(
                    f"memory {clash.id} already holds this text in namespace {clash.namespace!r}; "
                    f"update or forget that one instead", memory_id=old.id, existing_id=clash.id,
                )
            created = backend.supersede(old.id, row, (model, vector) if vector is not None else None)
        return result(created, created=True, notices=notices)

    def restore(self, memory_id: str) -> Memory:
        """Undo a forget (embedding the memory if it lacks a current vector)."""
        backend = self.backend
        memory_id = clean_id(memory_id)
        memory = backend.get(memory_id)
        if memory is None:
            raise NotFoundError(memory_id)
        if not memory.deleted:
            return memory
        vector = None
        model = self.embedding.model_id
        if memory.is_current:
            stored = backend.vectors_of([memory_id]).get(memory_id)
            if stored is None or stored[0] != model or stored[1] != memory.content_hash:
                try:
                    vector = (model, as_bytes(self.embedding.embed([memory.text])[0]))
                except ModelError as exc:
                    notify(f"restored without a vector ({exc}); run `memstore reindex` later")
        with backend.write():
            memory = backend.get(memory_id)
            if memory is None:
                raise NotFoundError(memory_id)
            if not memory.deleted:
                return memory
            if memory.is_current:
                clash = backend.find_live(memory.content_hash, except_id=memory_id)
                if clash is not None:
                    raise ConflictError(
                        f"cannot restore {memory_id}: memory {clash.id} holds the same text in "
                        f"namespace {clash.namespace!r} now (forget that one first, or keep it)",
                        memory_id=memory_id, existing_id=clash.id,
                    )
            backend.set_forgotten(memory_id, False, format_ts(now()), vector)
        found = backend.get(memory_id)
        assert found is not None
        return found

    # -- near-duplicates ---------------------------------------------------------------------

    def near_duplicate_threshold(self) -> float:
        name = "near_duplicate.threshold"
        return float(self.settings.get(name, SETTINGS[name].default))

    def _skip_near_duplicates(
        self, rows: Sequence[NewMemory], fresh: list[int], vectors: np.ndarray, threshold: float,
        results: dict[int, CaptureResult],
    ) -> tuple[list[int], np.ndarray]:
        """Drop from ``fresh`` the rows that nearly duplicate a live memory of their scope,
        recording that memory as their result. Returns the rows (and vectors) still to store."""
        keep: list[int] = []
        for n, i in enumerate(fresh):
            found = self._near_duplicate(vectors[n], rows[i], threshold)
            if found is None:
                keep.append(n)
                continue
            memory, similarity = found
            results[i] = result(
                memory, created=False, near_duplicate_of=memory.id, similarity=similarity,
                notices=(
                    f"not stored: near-duplicate of {memory.id} (cosine {similarity:.3f} >= "
                    f"{threshold:g}); if it corrects that memory, update it (or capture with "
                    "supersedes); to keep both, allow duplicates",
                ),
            )
        return [fresh[n] for n in keep], vectors[keep]

    def _near_duplicate(self, vector: np.ndarray, row: NewMemory, threshold: float
                        ) -> tuple[Memory, float] | None:
        """The most similar live, unexpired memory of the row's namespace and project with
        cosine >= ``threshold`` that does not state other numbers (an embedding barely tells
        "at 2am" from "at 4am")."""
        flt = Filter(namespaces=(row.namespace,), projects=(row.project,), now=now())
        close = self.backend.nearest(vector, flt, NEAR_DUPLICATE_CANDIDATES, model=self.embedding.model_id)
        for memory, similarity in close:
            if similarity >= threshold and not states_other_numbers(row.text, memory.text):
                return memory, similarity
        return None


# -- helpers shared with the facade ------------------------------------------------------------


def result(memory: Memory, *, created: bool, notices: tuple[str, ...] = (), **flags: Any) -> CaptureResult:
    fields = {name: getattr(memory, name) for name in Memory.__dataclass_fields__}
    return CaptureResult(**fields, created=created, notices=notices, **flags)


def redact_secrets(text: Any, meta: Any) -> tuple[Any, Any, tuple[str, ...]]:
    """Text and metadata with secrets replaced, checked again against the limits: a marker can
    be longer than what it replaces, and a stored memory must always fit them (or it could
    not be imported from its own export, nor updated with the same text)."""
    from .redact import redact_fields

    new_text, new_meta, kinds = redact_fields(text, meta)
    if kinds:
        try:
            if new_text is not None:
                clean_text(new_text)
            if new_meta is not None:
                clean_metadata(new_meta)
        except InvalidInputError as exc:
            raise InvalidInputError(
                f"once its secrets are replaced by [REDACTED:…] markers, {exc} "
                "(or keep the secrets with redact=False / --no-redact)"
            ) from None
    return new_text, new_meta, kinds


def redact_names(names: dict[str, Any]) -> tuple[dict[str, Any], tuple[str, ...]]:
    """Namespace, tags, source, project, branch with secrets replaced (a tag is searchable, a
    namespace shown everywhere), checked again against the name rules."""
    from .redact import redact_names as replace_in_names

    done, kinds = replace_in_names(names)
    if not kinds:
        return names, ()
    for name, value in done.items():
        if name == "tags":
            done[name] = clean_tags(value)
        else:
            done[name] = clean_name(value, name, allow_none=name != "namespace")
    return done, kinds


def with_redactions(res: CaptureResult, kinds: tuple[str, ...]) -> CaptureResult:
    if not kinds:
        return res
    from .redact import notice

    return replace(res, redacted=kinds, notices=(*res.notices, notice(kinds)))


def clean_id(memory_id: Any) -> str:
    if not isinstance(memory_id, str) or not memory_id.strip():
        raise InvalidInputError("memory id must be a non-empty string")
    return memory_id.strip()


def current_version(backend: Backend, memory_id: str) -> Memory:
    """The memory, which must be live and current (not forgotten, not superseded)."""
    found = backend.get(memory_id)
    if found is None:
        raise NotFoundError(memory_id)
    check_current(backend, found)
    return found


def check_current(backend: Backend, memory: Memory) -> None:
    """Raise ConflictError unless the memory is live and current (update/supersede targets)."""
    if memory.deleted:
        raise ConflictError(
            f"memory {memory.id} is forgotten; restore it first (`memstore restore {memory.id}`)",
            memory_id=memory.id,
        )
    if memory.superseded_by is not None:
        versions = backend.chain(memory.id)
        head = next((m.id for m in reversed(versions) if m.superseded_by is None), memory.superseded_by)
        raise ConflictError(
            f"memory {memory.id} is an old version; the current version is {head}",
            memory_id=memory.id, existing_id=head,
        )


def expiry(expires_at: TimeLike, ttl: TtlLike) -> datetime | None:
    """When a new memory expires: ``ttl`` from now, or ``expires_at`` (which must be ahead)."""
    if ttl is not None and expires_at is not None:
        raise InvalidInputError("give expires_at or ttl, not both")
    if ttl is not None:
        if isinstance(ttl, timedelta):
            delta = ttl
        elif isinstance(ttl, str):
            delta = parse_duration(ttl)
        else:
            raise InvalidInputError(
                f"ttl must be a duration such as '7d' or a timedelta, not {type(ttl).__name__}"
            )
        if delta.total_seconds() <= 0:
            raise InvalidInputError("ttl must be positive")
        return add(now(), delta, "expiry (now + ttl)")
    if expires_at is None:
        return None
    if isinstance(expires_at, str):
        try:
            parse_duration(expires_at)
        except InvalidInputError:
            pass
        else:
            raise InvalidInputError(
                f"expires_at {expires_at!r} is a duration: use ttl={expires_at!r} for 'that long from now'"
            )
    when = parse_time(expires_at, field="expires_at")
    assert when is not None
    if when <= now():
        raise InvalidInputError(f"expires_at {format_ts(when)} is in the past")
    return when
