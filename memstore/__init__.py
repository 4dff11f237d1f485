"""memstore: a personal memory store with offline semantic recall.

    import memstore
    with memstore.open() as store:
        store.capture("We chose PostgreSQL for JSONB support", namespace="decisions")
        hits = store.recall("which database did we pick?")
"""

from .embedding import Embedder, EmbedderFallbackWarning, FastEmbedder, HashEmbedder, ModelInfo
from .errors import (
    ConflictError,
    CorruptDatabaseError,
    GitError,
    InvalidInputError,
    MemstoreError,
    ModelError,
    ModelMismatchError,
    NotFoundError,
    SchemaTooNewError,
    StoreError,
    StoreNotWritableError,
)
from .models import CaptureResult, Hit, ImportResult, Memory, PurgedMemory, PurgeResult
from .store import MemoryStore, ModelMismatchWarning
from .store import open_store as open
from .version import __version__

__all__ = [
    "CaptureResult",
    "ConflictError",
    "CorruptDatabaseError",
    "Embedder",
    "EmbedderFallbackWarning",
    "FastEmbedder",
    "GitError",
    "HashEmbedder",
    "Hit",
    "ImportResult",
    "InvalidInputError",
    "Memory",
    "MemoryStore",
    "MemstoreError",
    "ModelError",
    "ModelInfo",
    "ModelMismatchError",
    "ModelMismatchWarning",
    "NotFoundError",
    "PurgeResult",
    "PurgedMemory",
    "SchemaTooNewError",
    "StoreError",
    "StoreNotWritableError",
    "__version__",
    "open",
]
