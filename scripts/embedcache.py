"""A caching wrapper around the real embedder, for evaluation and benchmark scripts.

Embedding the evaluation corpora with the bundled model takes minutes on 2 cores; scripts
that run them repeatedly wrap the resolved embedder in ``CachingEmbedder`` and pass it to
``memstore.open(..., embedder=...)`` (the public API). Vectors are exactly the model's
(cached per model id + text), kept in a directory outside the repository.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import xxhash

from memstore.embedding import Embedder, resolve_embedder

DEFAULT_DIR = Path(os.environ.get("MEMSTORE_BENCH_CACHE", Path.home() / ".cache" / "memstore-bench"))


class CachingEmbedder:
    """Delegates to ``inner``, remembering every text's vector in an SQLite file."""

    def __init__(self, inner: Embedder | None = None, directory: Path = DEFAULT_DIR) -> None:
        self.inner = inner or resolve_embedder()
        self.model_id = self.inner.model_id
        self.dimension = self.inner.dimension
        self.info = getattr(self.inner, "info", None)
        directory.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(directory / "vectors.db", isolation_level=None)
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS vectors (model TEXT, kind TEXT, key TEXT, vector BLOB, "
            "PRIMARY KEY (model, kind, key))"
        )
        self.hits = self.misses = 0

    def _key(self, text: str) -> str:
        return xxhash.xxh3_128_hexdigest(text.encode("utf-8"))

    def _lookup(self, kind: str, texts: Sequence[str]) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        keys = [self._key(t) for t in texts]
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            rows = self._db.execute(
                f"SELECT key, vector FROM vectors WHERE model = ? AND kind = ? AND key IN "
                f"({', '.join('?' * len(chunk))})",
                [self.model_id, kind, *chunk],
            )
            for key, blob in rows:
                found[key] = np.frombuffer(blob, dtype="<f4")
        return found

    def _store(self, kind: str, pairs: list[tuple[str, np.ndarray]]) -> None:
        self._db.execute("BEGIN")
        self._db.executemany(
            "INSERT OR REPLACE INTO vectors VALUES (?, ?, ?, ?)",
            [(self.model_id, kind, self._key(t), v.astype("<f4").tobytes()) for t, v in pairs],
        )
        self._db.execute("COMMIT")

    def cached(self, texts: Sequence[str], kind: str = "doc") -> dict[str, np.ndarray]:
        """Vectors already cached for ``texts`` (text -> vector); computes nothing."""
        found = self._lookup(kind, texts)
        out: dict[str, np.ndarray] = {}
        for text in texts:
            vec = found.get(self._key(text))
            if vec is not None:
                out[text] = vec
        return out

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        found = self._lookup("doc", texts)
        missing = list(dict.fromkeys(t for t in texts if self._key(t) not in found))
        self.hits += len(texts) - len(missing)
        self.misses += len(missing)
        if missing:
            vectors = self.inner.embed(missing)
            self._store("doc", list(zip(missing, vectors, strict=True)))
            for text, vec in zip(missing, vectors, strict=True):
                found[self._key(text)] = vec
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return np.stack([found[self._key(t)] for t in texts]).astype(np.float32)

    def embed_query(self, text: str) -> np.ndarray:
        found = self._lookup("query", [text])
        if found:
            self.hits += 1
            return next(iter(found.values())).astype(np.float32)
        self.misses += 1
        vec = np.asarray(self.inner.embed_query(text), dtype=np.float32)
        self._store("query", [(text, vec)])
        return vec
