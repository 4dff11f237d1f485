"""Every error memstore raises on purpose, in one tree.

Catch ``MemstoreError`` to handle them all; each leaf says what went wrong
and changes nothing in the store::

    MemstoreError
     ├── InvalidInputError        bad text, tag, namespace, metadata, time or option (also ValueError)
     │    └── ConflictError           the memory's state forbids it (forgotten, superseded, same text live)
     ├── NotFoundError            no memory with that id (also LookupError)
     ├── StoreError               the store directory or database cannot be used
     │    ├── StoreNotWritableError   the directory or database file is read-only
     │    ├── SchemaTooNewError       written by a newer memstore; upgrade to open it
     │    └── CorruptDatabaseError    SQLite says the file is damaged; it is left untouched
     ├── ModelError               the embedding model cannot be loaded or does not match
     │    └── ModelMismatchError      vectors in the store come from another model: run reindex
     └── GitError                 git is missing, a path is not in a repository, or git failed

    ModelMismatchWarning (a UserWarning): some vectors are from another model; keyword only
"""

from __future__ import annotations

__all__ = [
    "ConflictError",
    "CorruptDatabaseError",
    "GitError",
    "InvalidInputError",
    "MemstoreError",
    "ModelError",
    "ModelMismatchError",
    "ModelMismatchWarning",
    "NotFoundError",
    "SchemaTooNewError",
    "StoreError",
    "StoreNotWritableError",
]


class MemstoreError(Exception):
    """Base of every error memstore raises deliberately."""


class InvalidInputError(MemstoreError, ValueError):
    """Input was refused before anything was written."""


class ConflictError(InvalidInputError):
    """The request is well-formed but the memory's state forbids it: it is forgotten or
    superseded, or the result would duplicate another live memory (``existing_id``)."""

    def __init__(self, message: str, *, memory_id: str | None = None, existing_id: str | None = None) -> None:
        super().__init__(message)
        self.memory_id = memory_id
        self.existing_id = existing_id


class NotFoundError(MemstoreError, LookupError):
    """No memory has the given id."""

    def __init__(self, memory_id: str) -> None:
        super().__init__(f"no memory with id {memory_id!r}")
        self.memory_id = memory_id


class StoreError(MemstoreError):
    """The store directory or its database cannot be used."""


class StoreNotWritableError(StoreError):
    """The store directory or database is not writable by this user."""


class SchemaTooNewError(StoreError):
    """The database was written by a newer memstore than this one."""


class CorruptDatabaseError(StoreError):
    """SQLite reports the database file as damaged; memstore never overwrites it."""


class ModelError(MemstoreError):
    """The embedding model cannot be found, verified or loaded."""


class ModelMismatchError(ModelError):
    """Stored vectors were made by a different model than the one in use."""


class GitError(MemstoreError):
    """git is not installed, the path is not in a repository, or a git command failed."""


class ModelMismatchWarning(UserWarning):
    """Some memories carry vectors from another model; they are left out of the vector leg."""
