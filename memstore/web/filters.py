"""Search and browse filters: which ones the store offers, and request parameters → keyword
arguments of ``recall``/``list``.

A filter is offered only when the store's ``recall`` and ``list`` both take its keyword, so
one the library gains later (``author``, once memories carry one) shows up on the page by
adding a line to :data:`FIELDS`, on every backend the facade serves. Values are passed to
the library as they are given; the library validates them (a bad one is a one-line error).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["FIELDS", "FilterField", "available", "filter_kwargs", "paging", "recall_options"]

MODES = ("hybrid", "keyword", "semantic")
PAGE_SIZE = 20


@dataclass(frozen=True)
class FilterField:
    """One filter: its query parameter, the library keyword it feeds and how it is entered."""

    param: str
    keyword: str
    label: str
    multiple: bool = False  # repeatable (and comma-separated in the page's single input)
    kind: str = "text"  # "text" or "time"
    hint: str = ""


FIELDS: tuple[FilterField, ...] = (
    FilterField("namespace", "namespace", "Namespace", multiple=True, hint="decisions, notes"),
    FilterField("tag", "tags", "Tags (all)", multiple=True, hint="db, infra"),
    FilterField("project", "project", "Project", multiple=True, hint="github.com/org/repo"),
    FilterField("branch", "branch", "Branch", hint="main"),
    FilterField("author", "author", "Author", multiple=True, hint="name"),
    FilterField("since", "since", "Since", kind="time", hint="7d, 2024-05-01"),
    FilterField("until", "until", "Until", kind="time", hint="yesterday"),
)


def available(store: Any) -> tuple[FilterField, ...]:
    """The filters both ``store.recall`` and ``store.list`` accept."""
    accepted = set(inspect.signature(store.recall).parameters) & set(inspect.signature(store.list).parameters)
    return tuple(f for f in FIELDS if f.keyword in accepted)


def _values(params: Mapping[str, Any], name: str) -> list[str]:
    getlist = getattr(params, "getlist", None)
    raw = getlist(name) if getlist is not None else ([params[name]] if name in params else [])
    return [str(v) for v in raw]


def filter_kwargs(params: Mapping[str, Any], fields: tuple[FilterField, ...]) -> dict[str, Any]:
    """Keyword arguments for recall/list from query parameters (empty values are no filter).

    A repeatable filter takes repeated parameters and comma-separated values, as typed."""
    kwargs: dict[str, Any] = {}
    for f in fields:
        values = [v.strip() for raw in _values(params, f.param) for v in
                  (raw.split(",") if f.multiple else [raw])]
        values = [v for v in values if v]
        if not values:
            continue
        kwargs[f.keyword] = values if f.multiple else values[-1]
    return kwargs


def recall_options(params: Mapping[str, Any], settings: Any) -> tuple[str, int]:
    """(mode, limit) from ``mode``/``limit`` parameters, defaulting to the store's settings.

    An unknown mode or a limit that is not a number is passed on so the library rejects it."""
    mode = (params.get("mode") or settings["recall.mode"]).strip()
    raw = (params.get("limit") or "").strip()
    limit: Any = settings["recall.limit"] if not raw else (int(raw) if raw.lstrip("-").isdigit() else raw)
    return mode, limit


def paging(params: Mapping[str, Any], default_limit: int = PAGE_SIZE) -> tuple[int, int]:
    """(limit, offset) for ``list``; values that are not numbers become -1 (rejected by the library)."""

    def number(name: str, default: int) -> int:
        raw = (params.get(name) or "").strip()
        if not raw:
            return default
        return int(raw) if raw.isdigit() else -1

    return number("limit", default_limit), number("offset", 0)


def selected(params: Mapping[str, Any], fields: tuple[FilterField, ...]) -> dict[str, str]:
    """The filter inputs' values as typed (for refilling the form)."""
    return {f.param: ", ".join(_values(params, f.param)) for f in fields}
