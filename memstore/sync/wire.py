"""How a sync state is laid out in a git tree, and the strict reading of one.

The tree of a sync commit::

    memstore-sync.json        {"format": "memstore-sync", "version": 1, "memories": N, "purged": K}
    purged.jsonl              {"id": "…", "supersedes": "…"|null} per purged version, sorted
    memories/<xx>.jsonl       export records (memstore.exchange) sorted by id; xx = sha1(id)[:2]

Records are exactly the lines of ``memstore export --with-vectors``, so everything arriving
goes through :func:`memstore.exchange.decode_record`, the validation ``import`` uses, and
then through the checks here: no id twice, no chain that points nowhere or loops, counts
that match the header. A vector that is not a finite unit-norm vector of this store's model
is dropped (the memory is embedded again on arrival), never stored.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from .. import exchange
from ..errors import InvalidInputError, SyncError
from .state import State, Version, canonical_metadata

__all__ = ["FORMAT", "RemoteStateError", "decode_tree", "encode_tree", "version_from_values"]

FORMAT = "memstore-sync"
VERSION = 1
HEADER = "memstore-sync.json"
PURGED = "purged.jsonl"
SHARD_DIR = "memories"
_SHARD = re.compile(r"^memories/[0-9a-f]{2}\.jsonl$")
#: How far a vector's norm may be from 1 (float32 rounding of a normalised vector is ~1e-7).
NORM_TOLERANCE = 1e-3
#: Valid timestamp years (the database form has four-digit years).
MIN_YEAR, MAX_YEAR = 1000, 9998


class RemoteStateError(SyncError):
    """The ref holds something that is not a valid memstore sync state; nothing was changed."""


@functools.lru_cache(maxsize=1 << 17)
def shard_of(memory_id: str) -> str:
    return f"{SHARD_DIR}/{hashlib.sha1(memory_id.encode('utf-8')).hexdigest()[:2]}.jsonl"


def record_of(v: Version) -> dict[str, Any]:
    """The export record of a version (with its vector, if it carries one)."""
    record: dict[str, Any] = {
        "id": v.id, "text": v.text, "namespace": v.namespace, "tags": list(v.tags),
        "metadata": json.loads(v.metadata), "source": v.source, "project": v.project,
        "branch": v.branch, "created_at": v.created_at, "updated_at": v.updated_at,
        "expires_at": v.expires_at, "deleted": v.deleted, "deleted_at": v.deleted_at,
        "supersedes": v.supersedes, "superseded_by": v.superseded_by,
    }
    if v.vector is not None:
        model, blob = v.vector
        record["embedding"] = {"model": model, "dimension": len(blob) // 4,
                               "data": base64.b64encode(blob).decode("ascii")}
    return record


def shard_prints(versions: Mapping[str, Version]) -> dict[str, str]:
    """shard path → a digest of what its records say (ids, states, links; content is fixed
    per id): equal digests, equal shards, so an unchanged shard is not encoded again."""
    parts: dict[str, list[str]] = {}
    for vid in sorted(versions):
        v = versions[vid]
        parts.setdefault(shard_of(vid), []).append(
            f"{vid}\0{v.updated_at}\0{v.deleted:d}\0{v.deleted_at}\0{v.supersedes}\0{v.superseded_by}"
        )
    return {path: hashlib.sha1("\n".join(lines).encode("utf-8")).hexdigest() for path, lines in parts.items()}


def encode_tree(state: State, reuse: Mapping[str, str] | None = None) -> dict[str, bytes | str]:
    """path → file bytes for a (normalised) state, or the blob oid to reuse for a shard named
    in ``reuse`` (path → oid). Deterministic: equal states, equal trees."""
    reuse = reuse or {}
    shards: dict[str, list[str]] = {}
    for vid in sorted(state.versions):
        path = shard_of(vid)
        if path in reuse:
            continue
        line = json.dumps(record_of(state.versions[vid]), ensure_ascii=False, sort_keys=True)
        shards.setdefault(path, []).append(line)
    files: dict[str, bytes | str] = {
        path: ("\n".join(lines) + "\n").encode("utf-8") for path, lines in shards.items()
    }
    present = {shard_of(vid) for vid in state.versions}
    files.update({path: oid for path, oid in reuse.items() if path in present})
    purged = [json.dumps({"id": pid, "supersedes": state.purged[pid]}, sort_keys=True)
              for pid in sorted(state.purged)]
    files[PURGED] = ("\n".join(purged) + "\n").encode("utf-8") if purged else b""
    head = {"format": FORMAT, "version": VERSION, "memories": len(state.versions),
            "purged": len(state.purged)}
    files[HEADER] = (json.dumps(head, sort_keys=True) + "\n").encode("utf-8")
    return files


def version_from_values(values: Mapping[str, Any], vector: tuple[str, bytes] | None) -> Version:
    """A Version from validated export values (``exchange.ExportRecord.values``)."""
    return Version(
        id=values["id"], text=values["text"], namespace=values["namespace"],
        tags=tuple(json.loads(values["tags"])),
        metadata=canonical_metadata(json.loads(values["metadata"])),
        source=values["source"], project=values["project"], branch=values["branch"],
        created_at=values["created_at"], expires_at=values["expires_at"],
        supersedes=values["supersedes"], updated_at=values["updated_at"],
        deleted=bool(values["deleted"]), deleted_at=values["deleted_at"],
        superseded_by=values["superseded_by"], vector=vector,
    )


def vector_ok(blob: bytes, dimension: int) -> bool:
    """A finite, unit-norm float32 vector of ``dimension`` values."""
    return vectors_ok([blob], dimension)[0]


def _check_years(values: Mapping[str, Any], where: str) -> None:
    for name in ("created_at", "updated_at", "expires_at", "deleted_at"):
        stamp = values.get(name)
        if stamp is not None and not (len(stamp) >= 4 and stamp[:4].isdigit()
                                      and MIN_YEAR <= int(stamp[:4]) <= MAX_YEAR):
            raise RemoteStateError(f"{where}: {name} {stamp!r} is outside years {MIN_YEAR}-{MAX_YEAR}")


def vectors_ok(blobs: list[bytes], dimension: int) -> list[bool]:
    """:func:`vector_ok` for many vectors at once."""
    import numpy as np

    if not blobs:
        return []
    sized = [len(b) == 4 * dimension for b in blobs]
    good = [b for b, ok in zip(blobs, sized, strict=True) if ok]
    if not good:
        return sized
    matrix = np.frombuffer(b"".join(good), dtype="<f4").reshape(len(good), dimension).astype(np.float64)
    finite = np.all(np.isfinite(matrix), axis=1)
    clean = np.where(np.isfinite(matrix), matrix, 0.0)
    with np.errstate(all="ignore"):
        norms = np.sqrt(np.einsum("ij,ij->i", clean, clean))
    verdict = iter(bool(f and abs(n - 1.0) <= NORM_TOLERANCE) for f, n in zip(finite, norms, strict=True))
    return [next(verdict) if ok else False for ok in sized]


def decode_tree(
    files: Mapping[str, bytes], *, model: str, dimension: int,
    known: Mapping[str, Version] | None = None, known_ids: frozenset[str] = frozenset(),
) -> tuple[State, int]:
    """(state, vectors dropped) from a commit's files; raises RemoteStateError naming what is
    wrong (the whole state is refused: a half-read remote would look like deletions).

    Shards left out of ``files`` are ones this store wrote itself and still has applied: their
    ids are ``known_ids`` and ``known`` gives this store's versions of them (those it still
    holds; the others it purged since)."""
    if HEADER not in files:
        raise RemoteStateError(f"the ref holds no {HEADER}: it is not a memstore sync ref")
    unknown = sorted(p for p in files if p not in (HEADER, PURGED) and not _SHARD.match(p))
    if unknown:
        raise RemoteStateError(f"the ref holds files memstore does not write: {', '.join(unknown[:3])}")
    try:
        head = json.loads(files[HEADER].decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise RemoteStateError(f"{HEADER} is not valid JSON ({exc})") from None
    if not isinstance(head, dict) or head.get("format") != FORMAT:
        raise RemoteStateError(f"{HEADER} is not a memstore sync header")
    if head.get("version") != VERSION:
        raise RemoteStateError(
            f"the ref has sync format version {head.get('version')!r}; this memstore reads {VERSION}"
        )
    purged = _read_purged(files.get(PURGED, b""))
    records: dict[str, exchange.ExportRecord] = {}
    pending: list[tuple[str, bytes]] = []
    rejected = 0
    for path in sorted(p for p in files if _SHARD.match(p)):
        for number, obj in _lines(files[path], path):
            where = f"{path} line {number}"
            try:
                record = exchange.decode_record(obj)
            except InvalidInputError as exc:
                raise RemoteStateError(f"{where}: {exc}") from None
            if shard_of(record.id) != path:
                raise RemoteStateError(f"{where}: memory {record.id} is in the wrong file")
            if record.id in records:
                raise RemoteStateError(f"{where}: memory {record.id} appears twice")
            _check_years(record.values, where)
            records[record.id] = record
            if record.vector_rejected:  # exchange already refused it (not a finite unit vector)
                rejected += 1
            elif record.vector is not None and record.vector_model == model:
                pending.append((record.id, record.vector))
    usable = {vid for (vid, _), ok in zip(pending, vectors_ok([b for _, b in pending], dimension),
                                             strict=True) if ok}
    dropped = len(pending) - len(usable) + rejected
    versions = {
        vid: version_from_values(r.values, (model, r.vector) if vid in usable and r.vector else None)
        for vid, r in records.items()
    }
    overlap = known_ids & set(versions)
    if overlap:
        raise RemoteStateError(f"memory {min(overlap)} is in the wrong file")
    count = len(versions) + len(known_ids)
    if head.get("memories") != count or head.get("purged") != len(purged):
        raise RemoteStateError(
            f"the header announces {head.get('memories')!r} memories and {head.get('purged')!r} purge "
            f"marks but the ref holds {count} and {len(purged)}: it was truncated or edited"
        )
    check_links(versions, purged, known_ids)
    for vid in known_ids:
        if known and vid in known:
            versions[vid] = known[vid]
    return State(versions, purged), dropped


def _lines(data: bytes, path: str) -> Iterable[tuple[int, Any]]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RemoteStateError(f"{path} is not UTF-8 ({exc.reason})") from None
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except (ValueError, RecursionError) as exc:
            raise RemoteStateError(f"{path} line {number}: not valid JSON ({exc})") from None


def _read_purged(data: bytes) -> dict[str, str | None]:
    purged: dict[str, str | None] = {}
    for number, obj in _lines(data, PURGED):
        where = f"{PURGED} line {number}"
        if not isinstance(obj, dict) or set(obj) != {"id", "supersedes"}:
            raise RemoteStateError(f"{where}: expected {{\"id\": …, \"supersedes\": …}}")
        try:
            pid = exchange._id_field(obj["id"], "id", required=True)
            link = exchange._id_field(obj["supersedes"], "supersedes", required=False)
        except InvalidInputError as exc:
            raise RemoteStateError(f"{where}: {exc}") from None
        assert pid is not None
        if pid in purged:
            raise RemoteStateError(f"{where}: {pid} appears twice")
        purged[pid] = link
    return purged


def check_links(versions: Mapping[str, Version], purged: Mapping[str, str | None],
                known_ids: frozenset[str] = frozenset()) -> None:
    """Refuse chains that point nowhere or loop (through purge marks too). ``known_ids`` are
    versions in shards this store wrote itself (checked then)."""
    for vid, v in versions.items():
        if v.id in purged:
            raise RemoteStateError(f"memory {vid} is both present and purged")
        for name, link in (("supersedes", v.supersedes), ("superseded_by", v.superseded_by)):
            if link is None:
                continue
            if link == vid:
                raise RemoteStateError(f"memory {vid} {name} itself")
            through_purge = name == "supersedes" and link in purged
            if link not in versions and link not in known_ids and not through_purge:
                raise RemoteStateError(f"memory {vid} {name} {link}, which is not there")
    for name in ("supersedes", "superseded_by"):
        done: set[str] = set()
        for start in versions:
            seen: set[str] = set()
            node: str | None = start
            while node is not None and node not in done:
                if node in seen:
                    raise RemoteStateError(f"the {name} links of memory {start} loop")
                seen.add(node)
                if node in versions:
                    node = getattr(versions[node], name)
                elif name == "supersedes":
                    node = purged.get(node)
                else:
                    node = None
            done |= seen
    for pid, link in purged.items():
        seen = {pid}
        node = link
        while node is not None and node in purged:
            if node in seen:
                raise RemoteStateError(f"the purge marks of {pid} loop")
            seen.add(node)
            node = purged[node]
