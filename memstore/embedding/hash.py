"""The hash embedder: feature hashing, deterministic and dependency-light (the fallback when no
model is available, and the fake embedder of the tests)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .base import HASH_MODEL_ID, ModelInfo

if TYPE_CHECKING:
    import numpy as np

__all__ = ["HashEmbedder"]

_WORD = re.compile(r"\w+", re.UNICODE)


class HashEmbedder:
    """Feature hashing of words and word pairs into 384 signed buckets (xxh3_64), L2-normalised.

    Deterministic and dependency-light: the fallback when no model is available and the
    fake embedder of the tests. It matches shared words, not meaning.
    """

    model_id = HASH_MODEL_ID
    dimension = 384

    def __init__(self) -> None:
        self.info = ModelInfo(self.model_id, self.dimension, "hash", "chosen")

    def _vector(self, text: str) -> np.ndarray:
        import numpy as np
        import xxhash

        vec = np.zeros(self.dimension, dtype=np.float32)
        words = [w.lower() for w in _WORD.findall(text)]
        features = words + [f"{a} {b}" for a, b in zip(words, words[1:], strict=False)]
        for feature in features:
            h = xxhash.xxh3_64_intdigest(feature.encode("utf-8"))
            vec[h % self.dimension] += 1.0 if h >> 63 else -1.0
        norm = float(np.linalg.norm(vec))
        return vec / norm if norm else vec

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """One L2-normalised float32 row per text: hashed words and word pairs."""
        import numpy as np

        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return np.stack([self._vector(t) for t in texts])

    def embed_query(self, text: str) -> np.ndarray:
        """The query's vector (the same function as for documents)."""
        return self._vector(text)


# ---------------------------------------------------------------------------------------------
