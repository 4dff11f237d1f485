"""The store's embedder, shape-checked, and the one loop that embeds memories in batches.

Pending (deferred) embeddings, ``reindex``, import and ``verify --repair`` all go through
:meth:`Embedding.embed_keys`: one transaction per batch, so a crash keeps the batches done.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from .errors import ModelError

if TYPE_CHECKING:
    import numpy as np

    from .embedding.base import Embedder
    from .storage.base import Backend, Key

__all__ = ["BATCH_SIZE", "Embedding", "Progress", "progress_callback"]

#: Default texts per embedding batch in bulk capture and reindex.
BATCH_SIZE = 256
#: progress(done, total) callback used by bulk operations
Progress = Callable[[int, int], None]


class Embedding:
    """The embedder a store uses (resolved on first use), with the checks every caller needs."""

    def __init__(self, resolve: Callable[[], Embedder]) -> None:
        self._resolve = resolve
        self._embedder: Embedder | None = None
        self._last_query: tuple[str, str, np.ndarray] | None = None

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = self._resolve()
        return self._embedder

    @property
    def model_id(self) -> str:
        return self.embedder.model_id

    @property
    def dimension(self) -> int:
        return self.embedder.dimension

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Document vectors, one row per text (float32); ModelError on a wrong shape."""
        import numpy as np

        vectors = np.asarray(self.embedder.embed(list(texts)), dtype=np.float32)
        expected = (len(texts), self.embedder.dimension)
        if vectors.shape != expected:
            raise ModelError(f"embedder returned shape {vectors.shape}, expected {expected}")
        return vectors

    def query(self, query: str) -> np.ndarray:
        """The query vector (remembered for the last query: recall asks twice)."""
        import numpy as np

        memo = self._last_query
        model = self.embedder.model_id
        if memo is not None and memo[0] == query and memo[1] == model:
            return memo[2]
        vec = np.asarray(self.embedder.embed_query(query), dtype=np.float32)
        if vec.shape != (self.embedder.dimension,):
            raise ModelError(f"embedder returned a query vector of shape {vec.shape}")
        self._last_query = (query, model, vec)
        return vec

    def embed_keys(self, backend: Backend, keys: Sequence[Key], batch_size: int,
                   progress: Progress | bool | None) -> int:
        """Embed these memories' current text with the current model, one transaction per
        batch, reporting progress. Returns how many."""
        model = self.embedder.model_id
        callback = progress_callback(progress, len(keys), "embedding")
        done = 0
        try:
            for start in range(0, len(keys), batch_size):
                jobs = backend.embed_jobs(keys[start : start + batch_size])
                vectors = self.embed([job.text for job in jobs])
                backend.put_vectors(model, [
                    (job.key, job.content_hash, as_bytes(vec)) for job, vec in zip(jobs, vectors, strict=True)
                ])
                done += len(jobs)
                if callback:
                    callback(done, len(keys))
        finally:
            if callback is not None and hasattr(callback, "close"):
                callback.close()
        return done


def as_bytes(vector: Any) -> bytes:
    """A vector as the stored form: little-endian float32."""
    return vector.astype("<f4").tobytes()


def progress_callback(progress: Progress | bool | None, total: int, label: str) -> Any:
    """``progress`` as a callback: True means a progress bar on stderr."""
    if progress is True:
        from tqdm import tqdm

        bar = tqdm(total=total, desc=label, unit="memory", leave=False)

        def update(done: int, _total: int) -> None:
            bar.update(done - bar.n)

        update.close = bar.close  # type: ignore[attr-defined]
        return update
    return progress or None
