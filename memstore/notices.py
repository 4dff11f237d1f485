"""One-line notices about what a call did on the way (an index rebuilt, a vector deferred).

Collected per call, not kept on the store: code deep in a backend calls :func:`notify`, and
the facade's public method that is running gathers them with :func:`collecting` — a context
variable, so concurrent requests (threads of a web server) never see each other's notices.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

__all__ = ["collecting", "notify"]

_sink: ContextVar[list[str] | None] = ContextVar("memstore_notices", default=None)


def notify(message: str) -> None:
    """Report a notice to the call being collected (dropped when nobody collects)."""
    sink = _sink.get()
    if sink is not None:
        sink.append(message)


@contextmanager
def collecting() -> Iterator[list[str]]:
    """Gather the notices of the block; an outer collector also gets them (nested calls)."""
    outer = _sink.get()
    notes: list[str] = []
    token = _sink.set(notes)
    try:
        yield notes
    finally:
        _sink.reset(token)
        if outer is not None:
            outer.extend(notes)
