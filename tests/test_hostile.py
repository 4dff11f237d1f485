"""Hostile input: property tests over capture, recall and list.

Arbitrary Unicode, control characters, NUL, FTS5 syntax, very long tokens, huge texts, odd
tags, namespaces and metadata keys: memstore never crashes, text round-trips exactly, and
invalid input is refused with InvalidInputError before anything changes.

Runs a bounded number of examples in CI; ``MEMSTORE_FUZZ=1`` runs a long session
(``MEMSTORE_FUZZ_EXAMPLES``, default 5000 per test).
"""

from __future__ import annotations

import json
import os
import sqlite3
import unicodedata

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import memstore
from memstore import limits
from memstore.embedding import HashEmbedder
from memstore.identity import normalise_text
from memstore.redact import redact

settings.register_profile(
    "memstore-ci", max_examples=40, deadline=None, derandomize=False,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                           HealthCheck.data_too_large],
)
settings.register_profile(
    "memstore-fuzz", max_examples=int(os.environ.get("MEMSTORE_FUZZ_EXAMPLES", "5000")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                           HealthCheck.data_too_large],
)
PROFILE = settings.get_profile("memstore-fuzz" if os.environ.get("MEMSTORE_FUZZ") else "memstore-ci")

FTS_SYNTAX = ['"', "*", "NEAR", "NEAR(", "AND", "OR", "NOT", ":", "^", "(", ")", "-", "+", "{", "}",
              "text:", "tags:", "memories_fts", "'", ";", "--", "/*", "\\", "%", "_", "\x00", "\x1b[31m",
              "\u202e", "\ufeff", "\u0301", "\U0001f600", "ﬁ", "İ", "ß", "\r\n", "\t", " "]

any_text = st.text()  # every code point except surrogates
fts_text = st.lists(st.one_of(st.sampled_from(FTS_SYNTAX), st.text(max_size=8)), max_size=30).map("".join)
long_token = st.integers(1, 70_000).map(lambda n: "x" * n)
texts = st.one_of(any_text, fts_text, long_token, st.binary(max_size=200))
names = st.one_of(st.text(max_size=140), st.sampled_from(FTS_SYNTAX), st.none())
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
metadata = st.one_of(st.none(), st.dictionaries(st.text(max_size=30), json_values, max_size=5))


def _valid_text(text: object) -> bool:
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            return False
    assert isinstance(text, str)
    return "\x00" not in text and bool(text.strip()) and len(text.encode("utf-8")) <= limits.MAX_TEXT_BYTES


def _clean_name(value: str | None) -> str | None:
    if value is None:
        return None
    cleaned = unicodedata.normalize("NFC", value).strip()
    ok = cleaned and len(cleaned) <= limits.MAX_NAME_CHARS and not any(
        unicodedata.category(c) in ("Cc", "Cs") for c in cleaned)
    return cleaned if ok else "\x00invalid"


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def hostile_store(request, tmp_path_factory):
    """One store per backend for the module: the same hostile input must hold on both."""
    if request.param == "sqlite":
        with memstore.open(tmp_path_factory.mktemp("hostile"), embedder=HashEmbedder()) as s:
            yield s
        return
    server = request.getfixturevalue("postgres_server")
    name, url = server.create_database()
    try:
        with memstore.open(url, embedder=HashEmbedder()) as s:
            yield s
    finally:
        server.drop_database(name)


_vocab = sqlite3.connect(":memory:")
_vocab.execute("CREATE VIRTUAL TABLE t USING fts5 (x, tokenize = 'porter unicode61 remove_diacritics 2')")
_vocab.execute("CREATE VIRTUAL TABLE v USING fts5vocab (t, 'row')")


def _indexable(word: str) -> bool:
    """Whether SQLite's unicode61 tokenizer (Unicode 6.1 classes) sees a token in ``word``:
    letters of scripts added to Unicode later are separators to it."""
    _vocab.execute("DELETE FROM t")
    _vocab.execute("INSERT INTO t (x) VALUES (?)", (word,))
    return _vocab.execute("SELECT count(*) FROM v").fetchone()[0] > 0


def _count(store) -> int:
    return store.stats()["memories"]


@PROFILE
@given(text=texts, redact_it=st.booleans())
def test_capture_round_trips_or_refuses_cleanly(hostile_store, text, redact_it):
    s = hostile_store
    before = _count(s)
    if not _valid_text(text):
        with pytest.raises(memstore.InvalidInputError) as info:
            s.capture(text, redact=redact_it, allow_duplicate=True)
        assert str(info.value)  # a message that says what is wrong
        assert _count(s) == before
        return
    result = s.capture(text, redact=redact_it, allow_duplicate=True)  # near-duplicates: test_near_duplicates
    original = text.decode("utf-8") if isinstance(text, bytes) else text
    expected = redact(original).text if redact_it else original
    stored = s.get(result.id)
    assert stored.text == result.text
    if result.created:
        assert stored.text == expected  # exactly, byte for byte
        assert _count(s) == before + 1
    else:  # the same memory (after whitespace/Unicode normalisation) was already there
        assert normalise_text(stored.text) == normalise_text(expected)
        assert _count(s) == before


@PROFILE
@given(query=st.one_of(any_text, fts_text), mode=st.sampled_from(["hybrid", "keyword", "semantic"]),
       namespace=names, tag=names)
def test_recall_never_crashes(hostile_store, query, mode, namespace, tag):
    s = hostile_store
    valid = _valid_text(query) and len(query.encode("utf-8")) <= limits.MAX_QUERY_BYTES
    filters_ok = all(_clean_name(v) != "\x00invalid" for v in (namespace, tag))
    if not (valid and filters_ok):
        with pytest.raises(memstore.InvalidInputError):
            s.recall(query, mode=mode, namespace=namespace, tags=tag)
        return
    hits = s.recall(query, mode=mode, limit=5, namespace=namespace, tags=tag)
    assert len(hits) <= 5
    for hit in hits:
        if namespace is not None:
            assert hit.memory.namespace == _clean_name(namespace)


@PROFILE
@given(words=st.lists(st.text(st.characters(categories=["L", "N"]), min_size=1, max_size=12),
                      min_size=1, max_size=6),
       syntax=st.lists(st.sampled_from(FTS_SYNTAX), max_size=4))
def test_keyword_recall_finds_any_captured_word(hostile_store, words, syntax):
    s = hostile_store
    text = " ".join(words) + " " + "".join(syntax)
    assume(_valid_text(text))
    result = s.capture(text, namespace="kw-probe", redact=False, allow_duplicate=True)
    word = max(words, key=len)
    assume(_indexable(word))  # see the README's Limits
    hits = s.recall(f"{word} {''.join(syntax)}", mode="keyword", namespace="kw-probe", limit=1000)
    assert result.id in [h.memory.id for h in hits], (text, word)


@PROFILE
@given(namespace=names, tags=st.one_of(st.none(), st.lists(names, max_size=5), names),
       meta=metadata, source=names)
def test_odd_names_and_metadata_round_trip_or_refuse(hostile_store, namespace, tags, meta, source):
    s = hostile_store
    before = _count(s)
    tag_list = [tags] if isinstance(tags, str) or tags is None else tags
    cleaned = [_clean_name(t) for t in tag_list if t is not None] if tags is not None else []
    names_ok = (
        _clean_name(namespace) != "\x00invalid" and _clean_name(source) != "\x00invalid"
        and (tags is None or (None not in tag_list and "\x00invalid" not in cleaned))
        and len(dict.fromkeys(cleaned)) <= limits.MAX_TAGS
    )
    try:
        encoded = json.dumps(meta, ensure_ascii=False, allow_nan=False).encode("utf-8")
        meta_ok = len(encoded) <= limits.MAX_METADATA_BYTES and not any(
            "\x00" in k for k in (meta or {}))
    except UnicodeEncodeError:
        meta_ok = False
    text = f"odd names probe {before}"
    if not (names_ok and meta_ok):
        with pytest.raises(memstore.InvalidInputError):
            s.capture(text, namespace=namespace, tags=tags, metadata=meta, source=source, redact=False,
                      allow_duplicate=True)
        assert _count(s) == before
        return
    result = s.capture(text, namespace=namespace, tags=tags, metadata=meta, source=source, redact=False,
                       allow_duplicate=True)
    stored = s.get(result.id)
    assert stored.metadata == (meta or {})
    assert list(stored.tags) == list(dict.fromkeys(cleaned))
    assert stored.namespace == (_clean_name(namespace) or "default")
    assert stored.source == _clean_name(source)
    listed = s.list(namespace=stored.namespace, tags=list(stored.tags) or None, limit=100_000)
    assert result.id in [m.id for m in listed]


def test_limits_are_exact(store):
    limit = limits.MAX_TEXT_BYTES
    at_limit = "é" * (limit // 2)
    assert len(at_limit.encode()) == limit
    assert store.capture(at_limit, redact=False).text == at_limit
    with pytest.raises(memstore.InvalidInputError, match="65,538 bytes; the limit is 65,536"):
        store.capture(at_limit + "é")
    token = "a" * (limit - 1)
    assert store.capture(token).text == token
    assert store.recall("a" * 8192, mode="keyword") == []
    with pytest.raises(memstore.InvalidInputError, match="limit is 8,192"):
        store.recall("a" * 8193)


def test_a_bad_item_in_a_batch_changes_nothing(store):
    with pytest.raises(memstore.InvalidInputError, match="item 2: text contains a NUL byte"):
        store.capture_many(["fine", "also fine", "bad\x00", "never reached"])
    assert store.stats()["memories"] == 0
