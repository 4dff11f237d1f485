"""Keyword query building, CJK query analysis and score fusion (pure functions)."""

import sqlite3

import pytest

from memstore.recall import KEYWORD_WEIGHT, VECTOR_WEIGHT, fuse
from memstore.storage.sqlite.keyword import cjk_match, fts_match
from memstore.storage.sqlite.migrations import CJK_GLOB_M003, _has_cjk_sql
from memstore.storage.terms import (
    CJK_GLOB,
    MAX_SUBSTRINGS,
    MAX_TERMS,
    cjk_substrings,
    has_cjk,
    keyword_strength,
    keyword_terms,
)


def test_terms_drop_stopwords_and_duplicates():
    assert keyword_terms("Which database did we pick, and which DB?") == ["database", "pick", "db"]


def test_only_stopwords_are_kept_rather_than_nothing():
    assert keyword_terms("what is this") == ["what", "is", "this"]


@pytest.mark.parametrize(
    "hostile",
    ['"unbalanced', "a AND b", "NEAR(a b)", "col:value", "pre*", "^start", "(x OR y)", "a\x00b", "-x +y"],
)
def test_match_expression_quotes_every_term(hostile):
    match = fts_match(keyword_terms(hostile))
    assert match is not None
    for part in match.split(" OR "):
        assert part.startswith('"') and part.endswith('"')


def test_nothing_to_match():
    assert fts_match(keyword_terms("?!* ()")) is None


def test_term_cap():
    assert len(keyword_terms(" ".join(f"w{i}" for i in range(500)))) == MAX_TERMS


@pytest.mark.parametrize(
    ("text", "expected"),
    [("数据库迁移", True), ("東京タワー", True), ("서울", True), ("ｶﾀｶﾅ", True), ("𠮷野家", True),
     ("plain English", False), ("café naïve", False), ("「」、。", False), ("", False)],
)
def test_has_cjk(text, expected):
    assert has_cjk(text) is expected


def test_cjk_match_is_every_trigram_of_each_run_quoted():
    assert cjk_match("数据库迁移") == '"数据库" OR "据库迁" OR "库迁移"'
    # punctuation splits runs; words of 3+ letters join as substrings; short runs are left out
    assert cjk_match("東京タワー、Python 猫") == '"東京タ" OR "京タワ" OR "タワー" OR "python"'


def test_cjk_match_needs_a_run_of_three():
    assert cjk_match("東京 猫") is None
    assert cjk_match("English only") is None


def test_cjk_substrings_cover_short_runs_and_bigrams():
    assert cjk_substrings("猫") == ["猫"]
    assert cjk_substrings("東京の天気") == ["東京", "京の", "の天", "天気"]
    assert cjk_substrings("猫 と 犬") == ["猫", "と", "犬"]
    assert len(cjk_substrings("あ" + "".join(chr(0x4E00 + i) for i in range(100)))) == MAX_SUBSTRINGS


def test_glob_of_the_trigram_migration_is_the_query_side_class():
    # The trigger condition (frozen in m003) and has_cjk() must agree, or CJK text is missed.
    assert CJK_GLOB == CJK_GLOB_M003


@pytest.mark.parametrize(
    "text",
    ["plain ASCII", "café “quoted” — dash", "emoji 🎉", "数据库", "mixed 東京 text", "서울", "ᄀ",
     "𠮷", "ｶ", "「」、。", "Ελληνικά", "々"],
)
def test_trigger_condition_agrees_with_has_cjk(text):
    conn = sqlite3.connect(":memory:")
    (found,) = conn.execute(f"SELECT {_has_cjk_sql('?1')}", (text,)).fetchone()
    assert bool(found) is has_cjk(text)


def test_keyword_strength_is_relative_to_the_best_match():
    assert keyword_strength(-4.0, -8.0) == pytest.approx(0.5)
    assert keyword_strength(-8.0, -8.0) == pytest.approx(1.0)
    assert keyword_strength(0.0, 0.0) == 0.0


def test_weights_are_a_convex_combination():
    assert pytest.approx(1.0) == KEYWORD_WEIGHT + VECTOR_WEIGHT
    assert 0 < KEYWORD_WEIGHT < 1


def test_fuse_adds_weighted_evidence():
    fused = dict(fuse({1: 1.0, 2: 0.5}, {2: 0.8, 3: 0.6}, [1, 2, 3], keyword_weight=0.4, vector_weight=0.6))
    assert fused[1] == pytest.approx(0.4)
    assert fused[2] == pytest.approx(0.4 * 0.5 + 0.6 * 0.8)
    assert fused[3] == pytest.approx(0.6 * 0.6)


def test_fuse_orders_best_first_and_ties_keep_order():
    fused = fuse({1: 0.5, 2: 0.5, 3: 1.0}, {}, [2, 1, 3, 2])
    assert [key for key, _ in fused] == [3, 2, 1]


def test_fuse_does_not_let_a_weak_leg_bury_a_strong_match():
    # The keyword leg's clear winner (strength 1) against a candidate the vector leg
    # barely prefers: rank fusion would tie them, score fusion keeps the strong match first.
    fused = fuse({"exact": 1.0, "vague": 0.1}, {"exact": 0.30, "vague": 0.32}, ["exact", "vague"])
    assert fused[0][0] == "exact"
