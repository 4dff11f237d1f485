"""The usearch HNSW index: a derived, rebuildable cache of the vectors in SQLite.

The only module that imports usearch. One index per embedding model, keyed by
memory ``seq``, holding the vectors of live (not forgotten, not superseded)
memories. On disk an index is two files in the store's ``index/`` directory:

- ``<slug>-<generation>.usearch``  the HNSW graph, written once, never modified;
- ``<slug>.json``                  which generation is current, the store id, the model,
                                   the vector-log op it reflects, its size and count.

Saving writes a new generation, then atomically replaces the JSON (``os.replace``),
then removes the old generation — all under a file lock, and never over a newer
save by another process. Anything missing, foreign, stale beyond the log or
unreadable is reported and rebuilt from SQLite by the caller.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

__all__ = ["NEWER", "IndexState", "VectorIndex"]

FORMAT = 1
CONNECTIVITY = 16
EXPANSION_ADD = 128
EXPANSION_SEARCH = 64
#: load() problem when the saved index reflects commits the caller's read snapshot predates
#: (usually another process saved it meanwhile: look again with a fresh snapshot)
NEWER = "vector index is newer than the database"


@dataclass(frozen=True)
class IndexState:
    """What the JSON beside an index file says about it."""

    store_id: str
    model_id: str
    dimension: int
    position: int
    count: int
    file: str
    size: int


def _slug(model_id: str) -> str:
    import xxhash

    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", model_id)[:48]
    return f"{readable}-{xxhash.xxh3_64_hexdigest(model_id.encode())[:8]}"


class VectorIndex:
    """An in-memory usearch index for one model, loadable from and savable to disk."""

    def __init__(self, directory: Path, model_id: str, dimension: int) -> None:
        self.directory = Path(directory)
        self.model_id = model_id
        self.dimension = dimension
        self.slug = _slug(model_id)
        self.meta_path = self.directory / f"{self.slug}.json"
        self.lock_path = self.directory / f"{self.slug}.lock"
        #: vector-log op this in-memory index reflects; -1 when nothing is loaded
        self.position = -1
        #: position of the newest save known to be on disk
        self.saved_position = -1
        self._index: Any = None
        self._view = False
        #: the on-disk generation load() found unusable: save() must replace it, even though
        #: its metadata claims a position as new as ours
        self._rejected: str | None = None

    # -- state -------------------------------------------------------------------------------

    @property
    def loaded(self) -> bool:
        return self._index is not None

    def __len__(self) -> int:
        return len(self._index) if self._index is not None else 0

    def _new_index(self) -> Any:
        from usearch.index import Index

        return Index(
            ndim=self.dimension,
            metric="ip",
            dtype="f32",
            connectivity=CONNECTIVITY,
            expansion_add=EXPANSION_ADD,
            expansion_search=EXPANSION_SEARCH,
        )

    def read_state(self) -> IndexState | None:
        """The on-disk JSON, or None if missing or unreadable."""
        try:
            data = json.loads(self.meta_path.read_text())
            if data.get("format") != FORMAT:
                return None
            return IndexState(
                store_id=str(data["store_id"]),
                model_id=str(data["model_id"]),
                dimension=int(data["dimension"]),
                position=int(data["position"]),
                count=int(data["count"]),
                file=str(data["file"]),
                size=int(data["size"]),
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None

    # -- loading -----------------------------------------------------------------------------

    def load(self, store_id: str, floor: int, head: int) -> str | None:
        """Load the saved index if it is usable for this store at log range [floor, head].

        Returns None on success or when there is simply no saved index; otherwise a
        one-line reason why the file on disk was not usable (the caller rebuilds).
        Loads a read-only memory map when the file is already current.
        """
        self._index, self.position, self._view = None, -1, False
        for _attempt in range(10):
            state = self.read_state()
            if state is None:
                return "vector index metadata is unreadable" if self.meta_path.exists() else None
            problem = self._load_state(state, store_id, floor, head)
            if problem == "":
                continue  # a concurrent save replaced it between our reads: read the JSON again
            self._rejected = state.file if problem is not None else None
            return problem
        return "vector index file keeps disappearing"

    def _load_state(self, state: IndexState, store_id: str, floor: int, head: int) -> str | None:
        """Load the generation ``state`` names: None on success, "" if its file vanished,
        else why it is unusable."""
        if state.store_id != store_id:
            return "vector index belongs to another database"
        if state.model_id != self.model_id or state.dimension != self.dimension:
            return "vector index was built for another model"
        if state.position > head:
            return NEWER
        if state.position < floor:
            return "vector index is older than the change log"
        path = self.directory / state.file
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return ""
        if size != state.size:
            return f"vector index file {path.name} is truncated or damaged"
        from usearch.index import Index

        view = state.position == head
        try:
            index = Index.restore(str(path), view=view)
        except (ValueError, RuntimeError, OSError) as exc:
            if not path.exists():
                return ""  # removed by a concurrent save after we read the JSON
            return f"vector index file {path.name} is unreadable ({exc})"
        if index is None and not path.exists():  # restore() says None for a vanished file
            return ""
        if index is None or index.ndim != self.dimension or len(index) != state.count:
            return f"vector index file {path.name} does not match its metadata"
        index.expansion_search = EXPANSION_SEARCH
        self._index, self._view = index, view
        self.position = self.saved_position = state.position
        return None

    def _make_writable(self) -> None:
        if self._index is None:
            self._index = self._new_index()
        elif self._view:
            self._index, self._view = self._index.copy(), False

    def rebuild(self, items: Iterable[tuple[int, bytes]], position: int) -> int:
        """Replace the in-memory index with ``items`` (seq, float32 bytes); returns the count."""
        import numpy as np

        self._index, self._view = self._new_index(), False
        keys: list[int] = []
        blobs: list[bytes] = []
        for seq, blob in items:
            keys.append(seq)
            blobs.append(blob)
            if len(keys) >= 8192:
                self._add(np, keys, blobs)
                keys, blobs = [], []
        if keys:
            self._add(np, keys, blobs)
        self.position = position
        return len(self._index)

    def _add(self, np: Any, keys: list[int], blobs: list[bytes]) -> None:
        size = self.dimension * 4
        if any(len(b) != size for b in blobs):  # damaged rows: left out (memstore verify reports them)
            keys, blobs = [k for k, b in zip(keys, blobs, strict=True) if len(b) == size], [
                b for b in blobs if len(b) == size
            ]
            if not keys:
                return
        matrix = np.frombuffer(b"".join(blobs), dtype="<f4").reshape(len(keys), self.dimension)
        self._index.add(_as_keys(keys), matrix)

    def apply(self, touched: Sequence[int], current: dict[int, bytes], position: int) -> None:
        """Bring touched seqs to their current state: present with ``current[seq]`` or absent."""
        import numpy as np

        if touched:
            self._make_writable()
            present = [s for s in touched if s in self._index]
            if present:
                self._index.remove(_as_keys(present))
            if current:
                self._add(np, list(current), list(current.values()))
        self.position = position

    def keys(self) -> list[int]:
        """Every seq in the index."""
        if self._index is None:
            return []
        return [int(k) for k in self._index.keys]

    def vectors(self, keys: Sequence[int]) -> np.ndarray:
        """The stored vectors of ``keys`` (all present), one row each."""
        import numpy as np

        found = self._index.get(_as_keys(keys))
        return np.vstack([np.asarray(v, dtype=np.float32).reshape(-1) for v in found])

    # -- search ------------------------------------------------------------------------------

    def search(self, query: np.ndarray, count: int, *, exact: bool = False) -> list[tuple[int, float]]:
        """(seq, cosine similarity) of the nearest ``count`` vectors, best first."""
        if self._index is None or len(self._index) == 0 or count <= 0:
            return []
        count = min(count, len(self._index))
        matches = self._index.search(query, count, exact=exact)
        return [
            (int(key), 1.0 - float(dist))
            for key, dist in zip(matches.keys, matches.distances, strict=True)
        ]

    # -- saving ------------------------------------------------------------------------------

    def save(self, store_id: str, *, force: bool = False) -> bool:
        """Write this index as the current generation unless disk already holds a newer one
        (or, without ``force``, one as new). ``force`` is for an index just rebuilt from
        SQLite: it replaces a same-position file that may be damaged.

        Returns True when a file was written.
        """
        if self._index is None:
            return False
        from filelock import FileLock

        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        with FileLock(str(self.lock_path), timeout=120, mode=0o600):
            state = self.read_state()
            if (
                state is not None
                and state.file != self._rejected
                and state.store_id == store_id
                and (state.position > self.position or (state.position == self.position and not force))
                and (self.directory / state.file).exists()
            ):
                self.saved_position = state.position
                return False
            name = f"{self.slug}-{uuid.uuid4().hex[:12]}.usearch"
            path = self.directory / name
            old_umask = os.umask(0o077)
            try:
                self._index.save(str(path))
                _fsync(path)
                data = {
                    "format": FORMAT,
                    "store_id": store_id,
                    "model_id": self.model_id,
                    "dimension": self.dimension,
                    "position": self.position,
                    "count": len(self._index),
                    "file": name,
                    "size": path.stat().st_size,
                }
                tmp = self.meta_path.with_suffix(f".json.{uuid.uuid4().hex[:8]}.tmp")
                tmp.write_text(json.dumps(data, indent=1))
                _fsync(tmp)
                os.replace(tmp, self.meta_path)
            finally:
                os.umask(old_umask)
            self.saved_position = self.position
            self._rejected = None
            self._remove_stale(keep=name)
            return True

    def _remove_stale(self, keep: str) -> None:
        for path in self.directory.glob(f"{self.slug}-*.usearch"):
            if path.name != keep:
                path.unlink(missing_ok=True)
        for path in self.directory.glob(f"{self.slug}.json.*.tmp"):
            path.unlink(missing_ok=True)

    def delete_files(self) -> None:
        """Remove this model's index files (they are only a cache)."""
        from filelock import FileLock

        with FileLock(str(self.lock_path), timeout=120, mode=0o600):
            self.meta_path.unlink(missing_ok=True)
            self._remove_stale(keep="")


def _as_keys(keys: Sequence[int]) -> Any:
    import numpy as np

    return np.asarray(keys, dtype=np.uint64)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
