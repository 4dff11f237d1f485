"""Keyword query building and rank fusion (pure functions)."""

import pytest

from memstore.search import MAX_TERMS, fts_match, keyword_terms, rrf


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


def test_rrf_sums_reciprocal_ranks():
    fused = dict(rrf([[1, 2, 3], [3, 1]], k=60))
    assert fused[1] == pytest.approx(1 / 61 + 1 / 62)
    assert fused[3] == pytest.approx(1 / 63 + 1 / 61)
    assert fused[2] == pytest.approx(1 / 62)
    assert [key for key, _ in rrf([[1, 2, 3], [3, 1]])] == [1, 3, 2]


def test_rrf_weights():
    fused = dict(rrf([[1], [2]], k=60, weights=[2.0, 1.0]))
    assert fused[1] == pytest.approx(2 / 61)
