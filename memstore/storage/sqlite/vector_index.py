"""The vector index: a derived, rebuildable cache of the vectors in SQLite.

The only module that imports usearch. One index per embedding model, keyed by
memory ``seq``, holding the vectors of live (not forgotten, not superseded)
memories, in one of two kinds the caller picks by size:

- ``flat``  every vector in one float32 matrix, searched exactly with numpy. No graph to
            build, nothing but numpy to import: what small stores and one-shot
            processes want (importing usearch alone costs ~0.2 s). A process that
            searches it again gets an int8 copy that finds the candidates first
            (:mod:`.coarse`: the same results, a third of the time at 10k).
- ``hnsw``  a usearch HNSW graph, searched approximately (or exactly on request). Built
            with a source of the stored vectors (the store's SQLite), its vectors are int8:
            the graph builds ~3x faster and holds a quarter of the memory, and the
            candidates it finds are rescored exactly from the source, so similarities are
            the stored float32 vectors' own.

On disk an index is two files in the store's ``index/`` directory:

- ``<slug>-<generation>.flat|.usearch``  the vectors, written once, never modified;
- ``<slug>.json``  which generation is current, its kind, the store id, the model, the
                   vector-log op it reflects, its size, count and digest (checked on load:
                   a file damaged in place is rebuilt, never searched).

Saving writes a new generation, then atomically replaces the JSON (``os.replace``),
then removes the old generation — all under a file lock, and never over a newer
save by another process. Anything missing, foreign, stale beyond the log or
unreadable is reported and rebuilt from SQLite by the caller.

A current file is opened as a read-only memory map. Changes made since it was saved
are kept beside it (an overlay: keys to hide, plus their current vectors searched
exactly), so catching up a few captures never copies the whole index.
"""

from __future__ import annotations

import contextlib
import json
import mmap
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from .files import fsync, replace_json

if TYPE_CHECKING:
    import numpy as np

    from .coarse import Coarse

__all__ = ["NEWER", "IndexState", "Kind", "Source", "VectorIndex"]

Kind = Literal["flat", "hnsw"]
#: The stored float32 vectors of some seqs, as (seq, bytes): what an approximate index
#: rescores its candidates from (seqs it does not yield, purged since, are dropped).
Source = Callable[[Sequence[int]], Iterable[tuple[int, bytes]]]

FORMAT = 2
CONNECTIVITY = 16
EXPANSION_ADD = 128
EXPANSION_SEARCH = 64
#: The scalar type of a new HNSW graph when the index has a Source: int8 builds the graph in
#: a third of float32's time (100k bench vectors, 2 cores: 35 s vs 112 s; `reindex` at 1M
#: 425-461 s vs 1,881 s) but ranks only roughly (recall@10 0.955 by itself at 100k), hence
#: the exact rescoring (0.989-0.993 at 1M). Without a Source, float32 (scored as usearch gives it).
HNSW_DTYPE = "i8"
#: An int8 graph is asked for RESCORE_FACTOR times the results wanted (at least RESCORE_MIN
#: more); those are rescored exactly and the best kept.
RESCORE_FACTOR = 2
RESCORE_MIN = 32
#: usearch stores an int8 component as trunc(x * 127).
I8_SCALE = 127.0
#: (up to this many vectors, search beam): HNSW recall falls as the graph grows (recall@10
#: against exact 0.993 at 100k, 0.970 at 1M with a beam of 64 — and the vector leg asks for
#: 100, so the beam was 100 in effect); a search-time setting, so no rebuild is needed.
EXPANSION_SEARCH_BY_SIZE = ((200_000, EXPANSION_SEARCH), (500_000, 256))
EXPANSION_SEARCH_LARGEST = 512


def expansion_search(count: int) -> int:
    """The HNSW search beam for an index of ``count`` vectors (see EXPANSION_SEARCH_BY_SIZE)."""
    for upto, beam in EXPANSION_SEARCH_BY_SIZE:
        if count <= upto:
            return beam
    return EXPANSION_SEARCH_LARGEST


#: A flat index of at least this many rows gets its int8 candidate stage (:mod:`.coarse`)
#: at its COARSE_AFTER-th search: building it costs ~15 ms at 10k, more than one exact
#: search, so a one-shot process (a CLI recall) never pays for it.
COARSE_MIN_ROWS = 4096
COARSE_AFTER = 2
#: Candidates per result the coarse stage tries (then, unproved, searches every row).
COARSE_FACTORS = (2, 8)
#: Changes kept beside a memory-mapped index before it is copied into memory.
OVERLAY_MAX = 4096
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
    kind: Kind = "hnsw"
    digest: str | None = None


def _slug(model_id: str) -> str:
    import xxhash

    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", model_id)[:48]
    return f"{readable}-{xxhash.xxh3_64_hexdigest(model_id.encode())[:8]}"


def _top(sims: np.ndarray, keys: np.ndarray, count: int) -> list[tuple[int, float]]:
    """(key, similarity) of the ``count`` best, best first; -inf rows are never returned."""
    import numpy as np

    count = min(count, len(sims))
    if count <= 0:
        return []
    part = np.argpartition(-sims, count - 1)[:count] if count < len(sims) else np.arange(len(sims))
    order = part[np.argsort(-sims[part], kind="stable")]
    order = order[sims[order] != -np.inf]
    return list(zip(keys[order].tolist(), sims[order].tolist(), strict=True))


def _dot(matrix: np.ndarray, query: np.ndarray) -> np.ndarray:
    """matrix @ query on this thread. Not BLAS: OpenBLAS runs a large matrix-vector product
    on every core, and on a busy 2-core machine its spinning threads were measured costing
    2-3x the CPU time and up to 40x the wall time; einsum's loop is as fast on one core."""
    import numpy as np

    return np.einsum("ij,j->i", matrix, query)


class _Flat:
    """Vectors in one matrix with a key per row; rows of removed keys are tombstoned
    (key -1) and reused, and dropped when saved."""

    def __init__(self, dimension: int, keys: np.ndarray | None = None,
                 matrix: np.ndarray | None = None, *, readonly: bool = False) -> None:
        import numpy as np

        self.dimension = dimension
        self.keys = keys if keys is not None else np.zeros(0, dtype=np.int64)
        self.matrix = matrix if matrix is not None else np.zeros((0, dimension), dtype=np.float32)
        self.used = len(self.keys)
        self.readonly = readonly
        self._rows: dict[int, int] | None = None
        self._free: list[int] = []
        self._coarse: Coarse | None = None
        self._searches = 0

    @property
    def rows(self) -> dict[int, int]:
        if self._rows is None:
            self._rows = {int(k): i for i, k in enumerate(self.keys[: self.used].tolist()) if k >= 0}
        return self._rows

    def __len__(self) -> int:
        return self.used - len(self._free)

    def __contains__(self, key: int) -> bool:
        return key in self.rows

    def writable(self) -> _Flat:
        """This matrix, or an in-memory copy of a memory-mapped one."""
        if not self.readonly:
            return self
        import numpy as np

        copy = _Flat(self.dimension, np.array(self.keys[: self.used]),
                     np.array(self.matrix[: self.used]))
        copy._searches = self._searches
        if self._coarse is not None:
            copy._coarse = self._coarse.copy()
        return copy

    def add(self, keys: Sequence[int], matrix: np.ndarray) -> None:
        import numpy as np

        assert not self.readonly
        rows = self.rows
        for key, vector in zip(keys, matrix, strict=True):
            row = rows.get(key)
            if row is None:
                if self._free:
                    row = self._free.pop()
                else:
                    if self.used == len(self.keys):
                        grow = max(64, self.used // 2)
                        self.keys = np.concatenate([self.keys, np.full(grow, -1, dtype=np.int64)])
                        self.matrix = np.concatenate(
                            [self.matrix, np.zeros((grow, self.dimension), dtype=np.float32)]
                        )
                    row = self.used
                    self.used += 1
                rows[key] = row
                self.keys[row] = key
            self.matrix[row] = vector
            if self._coarse is not None:
                self._coarse.set(row, self.matrix[row])

    def remove(self, keys: Iterable[int]) -> None:
        assert not self.readonly
        rows = self.rows
        for key in keys:
            row = rows.pop(key, None)
            if row is not None:
                self.keys[row] = -1
                self.matrix[row] = 0.0
                self._free.append(row)

    def search(self, query: np.ndarray, count: int) -> list[tuple[int, float]]:
        import numpy as np

        if self.used == 0:
            return []
        coarse = self._coarse_for(count)
        if coarse is not None:
            found = self._proved(coarse, query, count)
            if found is not None:
                return found
        sims = _dot(self.matrix[: self.used], query)
        if self._free:
            sims[self.keys[: self.used] < 0] = -np.inf
        return _top(sims, self.keys[: self.used], count)

    def _coarse_for(self, count: int) -> Coarse | None:
        """The int8 stage, built at this matrix's COARSE_AFTER-th search, when it can help."""
        from . import coarse

        self._searches += 1
        if self._coarse is None:
            if (self._searches < COARSE_AFTER or self.used < COARSE_MIN_ROWS
                    or not coarse.available()):
                return None
            self._coarse = coarse.Coarse(self.matrix[: self.used])
        return self._coarse if count * COARSE_FACTORS[0] < self.used else None

    def _proved(self, coarse: Coarse, query: np.ndarray, count: int) -> list[tuple[int, float]] | None:
        """The exact top ``count``, from exact scores of the coarse stage's best candidates —
        or None when its error bound cannot prove that no other row beats the last kept."""
        import numpy as np

        approx, bound = coarse.scores(query, self.used)
        keys = self.keys[: self.used]
        if self._free:
            approx[keys < 0] = -np.inf
        for factor in COARSE_FACTORS:
            size = count * factor
            if size >= self.used:
                return None
            picked = np.argpartition(-approx, size - 1)[:size]
            # Every row not picked scores at most `threshold` approximately, so at most
            # threshold + bound exactly.
            threshold = float(approx[picked].min())
            sims = _dot(self.matrix[picked], query)
            sims[approx[picked] == -np.inf] = -np.inf
            last_kept = float(np.partition(sims, size - count)[size - count])
            if threshold + bound < last_kept:
                return _top(sims, keys[picked], count)
        return None

    def search_among(self, query: np.ndarray, keys: Sequence[int], count: int) -> list[tuple[int, float]]:
        import numpy as np

        rows = self.rows
        found = [rows[k] for k in keys if k in rows]
        if not found:
            return []
        index = np.asarray(found, dtype=np.int64)
        return _top(_dot(self.matrix[index], query), self.keys[index], count)

    def items(self) -> tuple[np.ndarray, np.ndarray]:
        """(keys, matrix) of the live rows."""
        keys = self.keys[: self.used]
        if not self._free:
            return keys, self.matrix[: self.used]
        live = keys >= 0
        return keys[live], self.matrix[: self.used][live]


class _Hnsw:
    """A usearch index (possibly a read-only memory map of a saved one)."""

    def __init__(self, index: Any, *, readonly: bool = False) -> None:
        self.index = index
        self.readonly = readonly
        #: usearch's scalar kind of the held vectors: "F32", "I8" (built here), "F16"...
        self.scalar: str = index.dtype.name

    @staticmethod
    def new(dimension: int, dtype: str = "f32") -> _Hnsw:
        from usearch.index import Index

        return _Hnsw(Index(
            ndim=dimension,
            metric="ip",
            dtype=dtype,
            connectivity=CONNECTIVITY,
            expansion_add=EXPANSION_ADD,
            expansion_search=EXPANSION_SEARCH,
        ))

    @property
    def approximate(self) -> bool:
        """Whether its vectors are not float32 (an int8 graph, or a half-precision file):
        its own scores rank roughly and are not cosines, so results are rescored."""
        return self.scalar != "F32"

    @property
    def tolerance(self) -> float:
        """How far a held vector's component may be from the stored one (see vectors())."""
        return 1.0 / I8_SCALE if self.scalar == "I8" else 1e-3 if self.scalar in ("F16", "BF16") else 0.0

    def vectors(self, keys: Sequence[int]) -> np.ndarray:
        """The held vectors of ``keys`` (all present) as float32, int8 ones scaled back."""
        import numpy as np

        rows = [np.asarray(self.index.get(key), dtype=np.float32).reshape(-1) for key in keys]
        matrix = np.vstack(rows) if rows else np.zeros((0, self.index.ndim), dtype=np.float32)
        return matrix / I8_SCALE if self.scalar == "I8" else matrix

    def present(self, keys: Sequence[int]) -> list[int]:
        """Those of ``keys`` in the graph."""
        import numpy as np

        if not keys:
            return []
        wanted = _as_keys(keys)
        inside = np.asarray(self.index.contains(wanted), dtype=bool).reshape(-1)
        return wanted[inside].astype(np.int64).tolist()

    def __len__(self) -> int:
        return len(self.index)

    def __contains__(self, key: int) -> bool:
        return key in self.index

    def writable(self) -> _Hnsw:
        return _Hnsw(self.index.copy()) if self.readonly else self

    def add(self, keys: Sequence[int], matrix: np.ndarray) -> None:
        assert not self.readonly
        present = [k for k in keys if k in self.index]
        if present:
            self.index.remove(_as_keys(present))
        self.index.add(_as_keys(keys), matrix)

    def remove(self, keys: Iterable[int]) -> None:
        assert not self.readonly
        present = [k for k in keys if k in self.index]
        if present:
            self.index.remove(_as_keys(present))

    def search(self, query: np.ndarray, count: int, exact: bool) -> list[tuple[int, float]]:
        count = min(count, len(self.index))
        if count <= 0:
            return []
        matches = self.index.search(query, count, exact=exact)
        # an int8 graph's "inner product distance" is 1 - the dot product of the int8 vectors
        scale = I8_SCALE * I8_SCALE if self.scalar == "I8" else 1.0
        return [
            (int(key), (1.0 - float(dist)) / scale)
            for key, dist in zip(matches.keys, matches.distances, strict=True)
        ]

    def error_bound(self, dimension: int) -> float:
        """How far a rough score may be from the exact cosine of unit vectors: each int8
        component is off by less than 1/127, so each side's error vector has a norm below
        sqrt(dim)/127 (0.154 at 384 dimensions), and the dot product is off by less than
        twice that. A candidate farther off means the file's vectors are damaged."""
        return 2 * dimension**0.5 / I8_SCALE + 1e-3 if self.scalar == "I8" else 0.05

    def search_among(self, query: np.ndarray, keys: Sequence[int], count: int) -> list[tuple[int, float]]:
        """Exact over ``keys`` (float32 graphs only: an approximate one is rescored instead)."""
        import numpy as np

        assert not self.approximate
        wanted = self.present(keys)
        if not wanted:
            return []
        matrix = np.asarray(self.index.get(_as_keys(wanted)), dtype=np.float32).reshape(len(wanted), -1)
        return _top(_dot(matrix, query), np.asarray(wanted, dtype=np.int64), count)


class VectorIndex:
    """One model's vector index, loadable from and savable to disk."""

    def __init__(self, directory: Path, model_id: str, dimension: int,
                 source: Source | None = None) -> None:
        self.directory = Path(directory)
        self.model_id = model_id
        self.dimension = dimension
        #: the stored vectors, to rescore an approximate graph's candidates from; with one,
        #: a rebuilt HNSW graph is int8 (HNSW_DTYPE)
        self.source = source
        self.slug = _slug(model_id)
        self.meta_path = self.directory / f"{self.slug}.json"
        self.lock_path = self.directory / f"{self.slug}.lock"
        #: vector-log op this in-memory index reflects; -1 when nothing is loaded
        self.position = -1
        #: position of the newest save known to be on disk
        self.saved_position = -1
        self._base: _Flat | _Hnsw | None = None
        #: overlay on a read-only base: keys hidden in it, and their current vectors
        self._hidden: set[int] = set()
        self._extra: _Flat | None = None
        self._mmap: mmap.mmap | None = None
        #: the on-disk generation load() found unusable: save() must replace it, even though
        #: its metadata claims a position as new as ours
        self._rejected: str | None = None

    # -- state -------------------------------------------------------------------------------

    @property
    def loaded(self) -> bool:
        return self._base is not None

    @property
    def kind(self) -> Kind | None:
        if self._base is None:
            return None
        return "flat" if isinstance(self._base, _Flat) else "hnsw"

    def __len__(self) -> int:
        if self._base is None:
            return 0
        size = len(self._base) - len(self._hidden)
        return size + (len(self._extra) if self._extra is not None else 0)

    def read_state(self) -> IndexState | None:
        """The on-disk JSON, or None if missing or unreadable."""
        try:
            data = json.loads(self.meta_path.read_text())
            if data.get("format") not in (1, FORMAT):
                return None
            kind = data.get("kind", "hnsw")
            if kind not in ("flat", "hnsw"):
                return None
            return IndexState(
                store_id=str(data["store_id"]),
                model_id=str(data["model_id"]),
                dimension=int(data["dimension"]),
                position=int(data["position"]),
                count=int(data["count"]),
                file=str(data["file"]),
                size=int(data["size"]),
                kind=kind,
                digest=data.get("digest"),
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None

    # -- loading -----------------------------------------------------------------------------

    def load(self, store_id: str, floor: int, head: int) -> str | None:
        """Load the saved index if it is usable for this store at log range [floor, head].

        Returns None on success or when there is simply no saved index; otherwise a
        one-line reason why the file on disk was not usable (the caller rebuilds).
        The file is memory-mapped read-only; later changes go to the overlay.
        """
        self._reset()
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
        try:
            base = self._open_flat(path, state) if state.kind == "flat" else self._open_hnsw(path, state)
        except FileNotFoundError:
            return ""
        except (ValueError, RuntimeError, OSError) as exc:
            if not path.exists():
                return ""  # removed by a concurrent save after we read the JSON
            return f"vector index file {path.name} is unreadable ({exc})"
        if base is None and not path.exists():  # usearch's restore() says None for a vanished file
            return ""
        if base is None or len(base) != state.count:
            self._reset()
            return f"vector index file {path.name} does not match its metadata"
        self._base = base
        self.position = self.saved_position = state.position
        return None

    def _open_flat(self, path: Path, state: IndexState) -> _Flat | None:
        import numpy as np
        import xxhash

        count, dim = state.count, self.dimension
        if state.size != count * (8 + 4 * dim):
            return None
        if count == 0:
            return _Flat(dim)
        with path.open("rb") as fh:
            mapped = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        if xxhash.xxh3_64_hexdigest(mapped) != state.digest:
            mapped.close()
            return None
        self._mmap = mapped
        keys = np.frombuffer(mapped, dtype="<i8", count=count)
        matrix = np.frombuffer(mapped, dtype="<f4", offset=8 * count).reshape(count, dim)
        if count and int(keys.min()) < 0:
            return None
        return _Flat(dim, keys, matrix, readonly=True)

    def _open_hnsw(self, path: Path, state: IndexState) -> _Hnsw | None:
        from usearch.index import Index

        if state.digest is None or file_digest(path) != state.digest:
            return None  # damaged in place (same size), or saved without a digest: rebuilt
        index = Index.restore(str(path), view=True)
        if index is None or index.ndim != self.dimension:
            return None
        index.expansion_search = expansion_search(len(index))
        return _Hnsw(index, readonly=True)

    def _reset(self) -> None:
        self._base, self.position = None, -1
        self.out_of_range = 0
        self._hidden, self._extra = set(), None
        if self._mmap is not None:
            # arrays may still look at it: then the garbage collector closes it
            with contextlib.suppress(BufferError):
                self._mmap.close()
            self._mmap = None

    def rebuild(self, items: Iterable[tuple[int, bytes]], position: int, kind: Kind = "hnsw") -> int:
        """Replace the in-memory index with ``items`` (seq, float32 bytes); returns the count."""
        import numpy as np

        self._reset()
        base: _Flat | _Hnsw = (_Flat(self.dimension) if kind == "flat" else
                               _Hnsw.new(self.dimension, HNSW_DTYPE if self.source else "f32"))
        keys: list[int] = []
        blobs: list[bytes] = []
        size = 4 * self.dimension
        for seq, blob in items:
            if len(blob) != size:  # a damaged row: left out (memstore verify reports it)
                continue
            keys.append(seq)
            blobs.append(blob)
            if len(keys) >= 8192:
                base.add(keys, _matrix(np, blobs, self.dimension))
                keys, blobs = [], []
        if keys:
            base.add(keys, _matrix(np, blobs, self.dimension))
        if isinstance(base, _Hnsw):
            base.index.expansion_search = expansion_search(len(base))
        self._base = base
        self.position = position
        return len(base)

    def apply(self, touched: Sequence[int], current: dict[int, bytes], position: int) -> None:
        """Bring touched seqs to their current state: present with ``current[seq]`` or absent."""
        import numpy as np

        assert self._base is not None
        size = 4 * self.dimension
        current = {k: v for k, v in current.items() if len(v) == size}  # damaged rows: left out
        if touched:
            base = self._base
            if base.readonly and len(self._hidden) + len(touched) <= OVERLAY_MAX:
                if self._extra is None:
                    self._extra = _Flat(self.dimension)
                self._extra.remove(touched)
                self._hidden.update(s for s in touched if s in base)
                if current:
                    self._extra.add(list(current), _matrix(np, list(current.values()), self.dimension))
            else:
                self._materialize()
                base = self._base
                base.remove(touched)
                if current:
                    base.add(list(current), _matrix(np, list(current.values()), self.dimension))
        self.position = position

    def _materialize(self) -> None:
        """Make the base writable and fold the overlay into it."""
        import numpy as np

        assert self._base is not None
        if not self._base.readonly:
            return
        base = self._base.writable()
        if self._hidden:
            base.remove(self._hidden)
        if self._extra is not None and len(self._extra):
            keys, matrix = self._extra.items()
            base.add(keys.tolist(), np.ascontiguousarray(matrix))
        self._base, self._hidden, self._extra = base, set(), None

    def keys(self) -> list[int]:
        """Every seq in the index."""
        base = self._base
        if base is None:
            return []
        if isinstance(base, _Flat):
            found = [k for k in base.keys[: base.used].tolist() if k >= 0]
        else:
            found = [int(k) for k in base.index.keys]
        if self._hidden:
            found = [k for k in found if k not in self._hidden]
        if self._extra is not None:
            found += self._extra.items()[0].tolist()
        return found

    def vectors(self, keys: Sequence[int]) -> np.ndarray:
        """The stored vectors of ``keys`` (all present), one row each."""
        import numpy as np

        rows = []
        for key in keys:
            if self._extra is not None and key in self._extra:
                rows.append(self._extra.matrix[self._extra.rows[key]])
            elif isinstance(self._base, _Flat):
                rows.append(self._base.matrix[self._base.rows[key]])
            else:
                assert self._base is not None
                rows.append(self._base.vectors([key])[0])
        if not rows:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return np.vstack(rows).astype(np.float32)

    @property
    def tolerance(self) -> float:
        """How far a component from vectors() may be from the stored vector's (int8: 1/127)."""
        return self._base.tolerance if isinstance(self._base, _Hnsw) else 0.0

    # -- search ------------------------------------------------------------------------------

    def search(
        self, query: np.ndarray, count: int, *, exact: bool = False, among: Sequence[int] | None = None
    ) -> list[tuple[int, float]]:
        """(seq, cosine similarity) of the nearest ``count`` vectors, best first.

        Flat indexes are always exact; ``exact`` asks an HNSW index for exact search too.
        ``among`` restricts the search (exactly) to those seqs.
        """
        base = self._base
        if base is None or count <= 0:
            return []
        hidden, extra = self._hidden, self._extra
        found: list[tuple[int, float]]
        rough = base if isinstance(base, _Hnsw) and base.approximate else None
        if among is not None:
            inside = [s for s in among if s not in hidden]
            if rough is not None:
                found = self._rescored(query, rough.present(inside), count)
            else:
                found = base.search_among(query, inside, count)
            if extra is not None and len(extra):
                found += extra.search_among(query, among, count)
        else:
            wanted = count + len(hidden)
            if isinstance(base, _Flat):
                found = base.search(query, wanted)
            elif rough is not None and (exact or wanted >= len(rough)):
                every = (int(k) for k in rough.index.keys)
                found = self._rescored(query, [k for k in every if k not in hidden], count)
            elif rough is not None:  # the best few of the graph's candidates, rescored
                rescore = max(count * RESCORE_FACTOR, count + RESCORE_MIN)
                asked = min(len(rough), rescore + len(hidden))
                candidates = [(s, sim) for s, sim in rough.search(query, asked, False) if s not in hidden]
                candidates = candidates[:rescore]
                found = self._rescored(query, [s for s, _ in candidates], count,
                                       dict(candidates), rough.error_bound(self.dimension))
            else:
                found = base.search(query, wanted, exact)
            if hidden:
                found = [(s, sim) for s, sim in found if s not in hidden]
            if extra is not None and len(extra):
                found += extra.search(query, count)
        if hidden or extra is not None:
            found.sort(key=lambda item: -item[1])
        return _bounded(found[:count], self)

    def _rescored(self, query: np.ndarray, keys: Sequence[int], count: int,
                  rough: dict[int, float] | None = None, bound: float = 0.0) -> list[tuple[int, float]]:
        """The best ``count`` of ``keys`` by their stored vectors (the source's): exact.
        Candidates whose ``rough`` score is farther than ``bound`` from the exact one are
        counted in out_of_range (the graph's file is damaged)."""
        import numpy as np

        if not keys:
            return []
        if self.source is None:
            raise RuntimeError("an approximate (int8) vector index needs a source to rescore from")
        size = 4 * self.dimension
        rows = [(seq, blob) for seq, blob in self.source(keys) if len(blob) == size]
        if not rows:
            return []
        seqs = np.fromiter((seq for seq, _ in rows), dtype=np.int64, count=len(rows))
        sims = _dot(_matrix(np, [blob for _, blob in rows], self.dimension), query)
        if rough is not None:
            guess = np.fromiter((rough[seq] for seq, _ in rows), dtype=np.float64, count=len(rows))
            off = ~(np.abs(guess - sims) <= bound)  # NaN too
            self.out_of_range += int(off.sum())
        return _top(sims, seqs, count)

    #: Results seen outside [-1, 1] (or NaN) since load: vectors are unit length, so such a
    #: cosine means a damaged index; the store rebuilds it (see MemoryStore._vector_leg).
    out_of_range = 0

    # -- saving ------------------------------------------------------------------------------

    def save(self, store_id: str, *, force: bool = False) -> bool:
        """Write this index as the current generation unless disk already holds a newer one
        (or, without ``force``, one as new). ``force`` is for an index just rebuilt from
        SQLite: it replaces a same-position file that may be damaged.

        Returns True when a file was written.
        """
        if self._base is None:
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
            self._materialize()
            kind = self.kind
            name = f"{self.slug}-{os.urandom(6).hex()}.{'flat' if kind == 'flat' else 'usearch'}"
            path = self.directory / name
            old_umask = os.umask(0o077)
            try:
                digest = self._write(path)
                data = {
                    "format": FORMAT,
                    "kind": kind,
                    "store_id": store_id,
                    "model_id": self.model_id,
                    "dimension": self.dimension,
                    "position": self.position,
                    "count": len(self),
                    "file": name,
                    "size": path.stat().st_size,
                }
                if digest is not None:
                    data["digest"] = digest
                replace_json(self.meta_path, data)
            finally:
                os.umask(old_umask)
            self.saved_position = self.position
            self._rejected = None
            self._remove_stale(keep=name)
            return True

    def _write(self, path: Path) -> str | None:
        """Write the base to ``path`` (fsynced); the xxh3 digest of a flat file."""
        base = self._base
        if isinstance(base, _Hnsw):
            base.index.save(str(path))
            fsync(path)
            return file_digest(path)
        import numpy as np
        import xxhash

        assert isinstance(base, _Flat)
        keys, matrix = base.items()
        digest = xxhash.xxh3_64()
        with path.open("wb") as fh:
            for chunk in (np.ascontiguousarray(keys, dtype="<i8"), np.ascontiguousarray(matrix, dtype="<f4")):
                if chunk.size == 0:
                    continue
                data = memoryview(chunk.reshape(-1)).cast("B")
                digest.update(data)
                fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        return digest.hexdigest()

    def _remove_stale(self, keep: str) -> None:
        for pattern in (f"{self.slug}-*.usearch", f"{self.slug}-*.flat"):
            for path in self.directory.glob(pattern):
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


#: Slack for float32 rounding when telling a cosine from an impossible one.
COSINE_SLACK = 1e-3
#: HNSW files up to this size are digested whole on load; larger ones by their first and
#: last DIGEST_SAMPLE bytes (the header and the vectors' tail), plus sanity checks on results.
FULL_DIGEST_MAX = 256 * 1024 * 1024
DIGEST_SAMPLE = 16 * 1024 * 1024


def file_digest(path: Path) -> str:
    """xxh3 of an index file (sampled above FULL_DIGEST_MAX, see there), with its size."""
    import xxhash

    digest = xxhash.xxh3_64()
    with path.open("rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        if size == 0:
            return f"{size}:{digest.hexdigest()}"
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            if size <= FULL_DIGEST_MAX:
                digest.update(mapped)
            else:
                digest.update(mapped[:DIGEST_SAMPLE])
                digest.update(mapped[size - DIGEST_SAMPLE :])
    return f"{size}:{digest.hexdigest()}"


def _bounded(found: list[tuple[int, float]], index: VectorIndex) -> list[tuple[int, float]]:
    """Similarities clamped to [-1, 1] (NaN as -1), counting impossible ones on ``index``."""
    bad = [i for i, (_, sim) in enumerate(found) if not -1 - COSINE_SLACK <= sim <= 1 + COSINE_SLACK]
    if not bad and all(-1.0 <= sim <= 1.0 for _, sim in found):
        return found
    index.out_of_range += len(bad)
    clamped = [(s, -1.0 if sim != sim else min(1.0, max(-1.0, sim))) for s, sim in found]
    clamped.sort(key=lambda item: -item[1])
    return clamped


def _matrix(np: Any, blobs: list[bytes], dimension: int) -> Any:
    return np.frombuffer(b"".join(blobs), dtype="<f4").reshape(len(blobs), dimension)


def _as_keys(keys: Sequence[int]) -> Any:
    import numpy as np

    return np.asarray(keys, dtype=np.uint64)
