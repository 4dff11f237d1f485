"""What one running page shares between requests: the store, the guard, the templates, and
the last verify result. Nothing else is shared; per-call results (notices included) travel
with each response.

The store is one ``MemoryStore`` for the whole app: its RLock makes it safe to share between
the worker threads, and it keeps the model and the vector index loaded (opening per request
would load both every time; scripts/bench_web.py measures the difference).
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool

from ..notices import collecting
from .filters import FilterField, available
from .security import Guard
from .views import environment

__all__ = ["LastVerify", "WebState", "purge_digest", "run", "run_noted"]


async def run(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Call a blocking store method in a worker thread."""
    return await run_in_threadpool(fn, *args, **kwargs)


async def run_noted(fn: Any, *args: Any, **kwargs: Any) -> tuple[Any, list[str]]:
    """Like :func:`run`, also returning the notices of that one call (collected in the worker
    thread, so concurrent requests never see each other's)."""

    def call() -> tuple[Any, list[str]]:
        with collecting() as notes:
            value = fn(*args, **kwargs)
        return value, list(notes)

    return await run_in_threadpool(call)


def purge_digest(preview: Any) -> str:
    """A digest of what a purge would delete, so the confirmation deletes what was shown."""
    ids = sorted(f"{item.reason}:{item.memory.id}" for item in preview.items)
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()


@dataclass(frozen=True)
class LastVerify:
    at: datetime
    report: Any


@dataclass
class WebState:
    store: Any
    guard: Guard
    log_files: dict[str, Path] = field(default_factory=dict)
    env: Any = field(default_factory=environment)
    filter_fields: tuple[FilterField, ...] = ()
    _verify: LastVerify | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        if not self.filter_fields:
            self.filter_fields = available(self.store)

    @property
    def home_label(self) -> str:
        return str(getattr(self.store, "home", ""))

    def verify(self) -> Any:
        """Run ``verify`` (checks only) and keep the result for the overview."""
        report = self.store.verify()
        with self._lock:
            self._verify = LastVerify(datetime.now(timezone.utc), report)
        return report

    def last_verify(self) -> LastVerify | None:
        with self._lock:
            return self._verify

    def purge_if_unchanged(self, expect: str) -> Any:
        """Purge when what would go is still what the confirmation listed; None otherwise.

        The dry run and the purge are two calls: a memory forgotten in between by another
        process would go too (the store has no purge-these-ids call)."""
        with self._lock:
            if purge_digest(self.store.purge(dry_run=True)) != expect:
                return None
            return self.store.purge()
