"""Query text for the keyword leg, shared by every backend: word terms, CJK runs, strength.

User text never reaches a full-text engine as syntax: it is split into word tokens here,
and each backend quotes them in its own query language (FTS5 MATCH in
``storage/sqlite/keyword.py``).

Chinese, Japanese and Korean text has no spaces between words, so the word
index sees a whole run of CJK characters as one token. Queries with CJK
characters also search a trigram index of the memories that contain CJK text
(every 3-character window of each CJK run, OR-ed); runs of 1–2 characters,
which no trigram can match, are looked up by substring instead.
"""

from __future__ import annotations

import re

__all__ = [
    "cjk_grams",
    "CJK_GLOB",
    "CJK_RUN",
    "EVIDENCE_FACTOR",
    "MAX_TERMS",
    "cjk_runs",
    "cjk_substrings",
    "has_cjk",
    "keyword_strength",
    "keyword_terms",
]

# -- Tuning constants --------------------------------------------------------------------------
# All measured with scripts/eval_retrieval.py; the results and every ablation are in
# docs/retrieval.md. Chosen on BEIR SciFact, then confirmed unchanged on LoCoMo (held out):
# SciFact hybrid nDCG@10 0.742 (keyword 0.687, vector 0.647); LoCoMo 0.505 (keyword 0.482).
# Measured and rejected: Reciprocal Rank Fusion (k 10–100, keyword weight 1–3: at best 0.727 on
# SciFact, 0.477 on LoCoMo, where plain k=60 drops to 0.404); fusing without filling in the
# other leg's evidence; min-max or best-cosine normalisation; other keyword weights (0.2–0.6);
# deeper legs; other tokenizers and stopword lists; phrase boosts (see the keyword-leg table).

#: The keyword leg reads this many times its depth in matches: those beyond the listed ones are
#: the keyword evidence of candidates only the vector leg listed (reading them costs FTS5
#: nothing more, as it ranks every match anyway; 4 was as good as reading all).
EVIDENCE_FACTOR = 4

#: Most terms sent to FTS5 from one query.
MAX_TERMS = 64
#: Most 1–2 character CJK substrings looked up by scanning (they have no index).
MAX_SUBSTRINGS = 32

_TOKEN = re.compile(r"\w+", re.UNICODE)

# Function words that carry no topic. Dropped from the keyword query unless nothing else is left.
STOPWORDS = frozenset(
    """
    a about above after again against all am an and any are as at be because been before
    being below between both but by can could did do does doing down during each few for
    from further had has have having he her here hers herself him himself his how i if in
    into is it its itself just me more most my myself no nor not now of off on once only or
    other our ours ourselves out over own same she should so some such than that the their
    theirs them themselves then there these they this those through to too under until up
    very was we were what when where which while who whom why will with would you your yours
    yourself yourselves
    """.split()  # noqa: SIM905
)

#: Characters of CJK scripts (Han, kana, Hangul, their extensions and compatibility forms);
#: CJK punctuation (、。「」…) is left out so it separates runs like a space does.
CJK_RANGES = (  # the most common first: a GLOB stops at the first range that matches
    "\u4e00-\u9fff"  # CJK unified ideographs
    "\u3040-\u30ff"  # Hiragana, Katakana
    "\uac00-\ud7ff"  # Hangul syllables, Jamo extended-B
    "\u3400-\u4dbf"  # CJK extension A
    "\u1100-\u11ff"  # Hangul Jamo
    "\u2e80-\u2fdf"  # CJK radicals, Kangxi radicals
    "\u3005-\u3007"  # 々 〆 〇
    "\u3100-\u31ff"  # Bopomofo, Hangul compatibility Jamo, Kanbun, Katakana extensions
    "\ua960-\ua97f"  # Hangul Jamo extended-A
    "\uf900-\ufaff"  # CJK compatibility ideographs
    "\uff66-\uff9f"  # half-width Katakana
    "\U00020000-\U0003134f"  # CJK extensions B–G
)
CJK_RUN = re.compile(f"[{CJK_RANGES}]+")
#: The same class as an SQLite GLOB pattern (used by the triggers that fill the trigram index).
CJK_GLOB = f"*[{CJK_RANGES}]*"


def keyword_terms(query: str) -> list[str]:
    """Lower-cased word tokens of the query, stopwords dropped (unless that leaves nothing),
    duplicates removed, order kept, at most MAX_TERMS."""
    # Non-ASCII tokens keep their case: FTS5 folds case itself, with the Unicode 6.1 tables
    # of its unicode61 tokenizer; Python's newer tables would lower-case letters FTS5 indexed
    # as they are (e.g. U+10570) and the term would never match.
    tokens = [t.lower() if t.isascii() else t for t in _TOKEN.findall(query)]
    seen: dict[str, str] = {}
    for token in tokens:
        if token.lower() not in STOPWORDS:
            seen.setdefault(token.lower(), token)
    if not seen:
        for token in tokens:
            seen.setdefault(token.lower(), token)
    return list(seen.values())[:MAX_TERMS]


def has_cjk(text: str) -> bool:
    """True when the text holds at least one Chinese, Japanese or Korean character."""
    return CJK_RUN.search(text) is not None


def cjk_runs(text: str) -> list[str]:
    return list(dict.fromkeys(CJK_RUN.findall(text)))


def cjk_grams(query: str) -> list[str]:
    """What the trigram index is searched for: every 3-character window of each CJK run of
    3+ characters, plus the query's other words of 3+ characters (matched as substrings), at
    most MAX_TERMS; empty when no CJK run is long enough."""
    grams: dict[str, None] = {}
    for run in cjk_runs(query):
        for start in range(len(run) - 2):
            grams.setdefault(run[start : start + 3])
    if not grams:
        return []
    for word in keyword_terms(CJK_RUN.sub(" ", query)):
        if len(word) >= 3:
            grams.setdefault(word)
    return list(grams)[:MAX_TERMS]


def cjk_substrings(query: str) -> list[str]:
    """Substrings to look up where trigrams cannot help: each 1-character CJK run, and every
    2-character window (bigram) of longer runs, so "東京の天気" still finds "天気" in text
    whose trigrams differ. Distinct, in order, at most MAX_SUBSTRINGS."""
    found: dict[str, None] = {}
    for run in cjk_runs(query):
        if len(run) == 1:
            found.setdefault(run)
        for start in range(len(run) - 1):
            found.setdefault(run[start : start + 2])
    return list(found)[:MAX_SUBSTRINGS]


def keyword_strength(bm25: float, best: float) -> float:
    """A keyword match's strength in [0, 1]: its bm25 relative to the best match for the same
    query (SQLite's bm25 is negative, more negative is better)."""
    return bm25 / best if best < 0 else 0.0
