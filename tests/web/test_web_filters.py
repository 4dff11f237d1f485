"""Filters are offered when the store's recall and list take them (author arrives that way)."""

from __future__ import annotations

from typing import Any

from starlette.datastructures import QueryParams

from memstore.web import filters


class StoreWithAuthor:
    def recall(self, query: str, limit: int = 10, *, namespace: Any = None, author: Any = None) -> None: ...

    def list(self, *, limit: int = 20, namespace: Any = None, author: Any = None) -> None: ...


def test_author_is_offered_only_where_the_store_takes_it(web_store: Any) -> None:
    offered = [f.param for f in filters.available(web_store)]  # every backend records authors now
    assert offered == ["namespace", "tag", "project", "branch", "author", "since", "until"]
    assert [f.param for f in filters.available(StoreWithAuthor())] == ["namespace", "author"]


def test_parameters_become_keyword_arguments() -> None:
    fields = filters.FIELDS
    params = QueryParams("namespace=a,+b&namespace=c&tag=&branch=main&since=7d&author=dana&ignored=x")
    assert filters.filter_kwargs(params, fields) == {
        "namespace": ["a", "b", "c"], "branch": "main", "since": "7d", "author": ["dana"],
    }
    only = filters.available(StoreWithAuthor())
    assert filters.filter_kwargs(params, only) == {"namespace": ["a", "b", "c"], "author": ["dana"]}
