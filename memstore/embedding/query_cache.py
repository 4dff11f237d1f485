"""The persistent query-vector cache as the embedders see it: a protocol, its key and its size.

A repeated query in a fresh process then costs a lookup instead of a model load. The SQLite
file that implements it lives with the other SQLite code (``memstore.storage.sqlite.query_cache``);
an embedder only needs ``get`` and ``put``.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

__all__ = ["QUERY_CACHE_FILE", "QUERY_CACHE_MAX", "QueryCache", "query_key"]

#: File (in the cache directory) of the persistent query-vector cache.
QUERY_CACHE_FILE = "query-vectors.db"
#: Query vectors kept; the oldest go first beyond this (~1.6 kB each for 384 dimensions).
QUERY_CACHE_MAX = 10_000


@runtime_checkable
class QueryCache(Protocol):
    """Query vectors already computed. Only a cache: it never fails a recall."""

    def get(self, model_id: str, query: str) -> bytes | None:
        """The cached little-endian float32 vector bytes, or None."""
        ...

    def put(self, model_id: str, query: str, vector: bytes) -> None:
        """Remember a vector (best effort)."""
        ...


def query_key(model_id: str, query: str) -> str:
    """xxh3_128 of model id + normalised query: no query text is stored."""
    import xxhash

    return xxhash.xxh3_128_hexdigest(f"{model_id}\x00{query}".encode())
