"""Measure the cosine threshold at which a capture counts as a near-duplicate.

    python scripts/near_duplicate_threshold.py [--pairs scripts/data/near_duplicate_pairs.jsonl]
                                               [--eval-dir ../shared/eval] [--no-cache]

Data: ``scripts/data/near_duplicate_pairs.jsonl``, 150 hand-written pairs of realistic
memories (decisions, learnings, commit messages, notes, people and dates):

- 75 ``duplicate`` pairs: the second says the same thing as the first, in other words
  (kinds: reword, reorder, abbrev, commit-style, minor edits) — storing both adds nothing;
- 75 ``different`` pairs on the same subject: the second says something new (kinds: value —
  another time/number; negation — the opposite or a reversal; subject — same template,
  another person/service; topic — same subject, another fact). These are the hard cases:
  storing them matters, and some (a changed time) are really *updates*.

Every pair is embedded with the bundled all-MiniLM-L6-v2 (the store's default model); the
script prints the cosine distributions per label and kind, precision/recall of "cosine >= t
means duplicate" for a sweep of t, and the threshold that maximises F0.5 (precision counts
twice: a false alarm keeps a new fact out of the store unless the user overrides it, a miss
only stores one redundant memory), with a bootstrap over pairs for its stability.

As an outside check it also embeds the 1,109 SciFact claims (distinct statements written by
annotators, many of them near-identical negations of each other) and reports how many have a
nearest neighbour at or above the chosen threshold, with the closest pairs to read.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from corpus import DEFAULT_EVAL  # noqa: E402
from embedcache import CachingEmbedder  # noqa: E402

from memstore.embedding import resolve_embedder  # noqa: E402
from memstore.identity import states_other_numbers  # noqa: E402

DEFAULT_PAIRS = Path(__file__).parent / "data" / "near_duplicate_pairs.jsonl"
SWEEP = [round(0.70 + i / 100, 2) for i in range(30)]
_NEGATION = re.compile(r"\b(?:not|no|never|without|none|nothing)\b|n't", re.IGNORECASE)


def negation_differs(a: str, b: str) -> bool:
    """One text has a negation word and the other has none (measured, not used by memstore)."""
    return bool(_NEGATION.search(a)) != bool(_NEGATION.search(b))


#: Rules compared: a pair is flagged when cosine >= t and the guard lets it through.
#: memstore uses "cosine + number guard" (memstore.identity.states_other_numbers).
VARIANTS = {
    "cosine only": lambda a, b: True,
    "cosine + number guard": lambda a, b: not states_other_numbers(a, b),
    "cosine + number + negation guard": lambda a, b: not states_other_numbers(a, b)
    and not negation_differs(a, b),
}
USED = "cosine + number guard"


def load_pairs(path: Path) -> list[dict]:
    pairs = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    for pair in pairs:
        assert pair["label"] in ("duplicate", "different"), pair
    return pairs


def cosines(embedder, pairs: list[dict]) -> np.ndarray:
    a = np.asarray(embedder.embed([p["a"] for p in pairs]), dtype=np.float32)
    b = np.asarray(embedder.embed([p["b"] for p in pairs]), dtype=np.float32)
    return np.sum(a * b, axis=1)


def describe(values: list[float]) -> str:
    v = sorted(values)
    q = statistics.quantiles(v, n=10) if len(v) >= 2 else v * 9
    return (f"n={len(v):>3}  min {v[0]:.3f}  p10 {q[0]:.3f}  median {statistics.median(v):.3f}  "
            f"p90 {q[-1]:.3f}  max {v[-1]:.3f}")


def scores(
    sims: np.ndarray, labels: np.ndarray, t: float, allowed: np.ndarray | None = None
) -> tuple[int, int, int, float, float, float]:
    flagged = sims >= t
    if allowed is not None:
        flagged &= allowed
    tp = int(np.sum(flagged & labels))
    fp = int(np.sum(flagged & ~labels))
    fn = int(np.sum(~flagged & labels))
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    beta2 = 0.25
    f = (1 + beta2) * precision * recall / (beta2 * precision + recall) if precision + recall else 0.0
    return tp, fp, fn, precision, recall, f


def best_threshold(sims: np.ndarray, labels: np.ndarray, allowed: np.ndarray) -> float:
    """Highest F0.5 over the sweep; ties go to the higher (more cautious) threshold."""
    return max(SWEEP, key=lambda t: (round(scores(sims, labels, t, allowed)[5], 6), t))


def scifact_check(embedder, eval_dir: Path, threshold: float) -> None:
    path = eval_dir / "scifact" / "queries.jsonl"
    if not path.exists():
        print(f"\n(SciFact claims not found at {path}; outside check skipped)")
        return
    claims = [json.loads(line)["text"] for line in path.read_text().splitlines() if line.strip()]
    claims = list(dict.fromkeys(claims))
    vectors = np.asarray(embedder.embed(claims), dtype=np.float32)
    sims = vectors @ vectors.T
    np.fill_diagonal(sims, -1.0)
    nearest = sims.max(axis=1)
    print(f"\nSciFact claims: {len(claims)} distinct; nearest-neighbour cosine: {describe(nearest.tolist())}")
    i, j = np.triu_indices(len(claims), k=1)
    guarded = np.array([not states_other_numbers(claims[a], claims[b]) for a, b in zip(i, j, strict=True)])
    for t in sorted({0.80, threshold, 0.90, 0.95}):
        hit = sims[i, j] >= t
        flagged_any = np.zeros(len(claims), dtype=bool)
        flagged_any[i[hit & guarded]] = flagged_any[j[hit & guarded]] = True
        print(f"  claims with a neighbour at cosine >= {t:.2f}: {int(np.sum(nearest >= t)):>4} "
              f"({100 * float(np.mean(nearest >= t)):.1f}%); after the number guard "
              f"{int(flagged_any.sum()):>4} ({100 * float(flagged_any.mean()):.1f}%)")
    above = np.where((sims[i, j] >= threshold) & guarded)[0]
    order = above[np.argsort(-sims[i, j][above])]
    print(f"  pairs at or above {threshold:.2f} passing the number guard: {len(order)}; a sample:")
    for k in order[:: max(1, len(order) // 8)][:8]:
        print(f"    {sims[i[k], j[k]]:.3f}  {claims[i[k]][:100]!r}\n           {claims[j[k]][:100]!r}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pairs", type=Path, default=DEFAULT_PAIRS)
    parser.add_argument("--eval-dir", type=Path, default=DEFAULT_EVAL)
    parser.add_argument("--no-cache", action="store_true", help="embed without the vector cache")
    parser.add_argument("--bootstrap", type=int, default=1000)
    args = parser.parse_args()

    embedder = resolve_embedder() if args.no_cache else CachingEmbedder()
    print(f"model: {embedder.model_id}")
    pairs = load_pairs(args.pairs)
    sims = cosines(embedder, pairs)
    labels = np.array([p["label"] == "duplicate" for p in pairs])

    print(f"\n{len(pairs)} labelled pairs from {args.pairs.name}")
    for label in ("duplicate", "different"):
        values = [float(s) for s, p in zip(sims, pairs, strict=True) if p["label"] == label]
        print(f"  {label:<10} {describe(values)}")
    for label in ("duplicate", "different"):
        kinds = sorted({p["kind"] for p in pairs if p["label"] == label})
        for kind in kinds:
            key = (label, kind)
            vals = [float(s) for s, p in zip(sims, pairs, strict=True) if (p["label"], p["kind"]) == key]
            print(f"    {label[:4]}/{kind:<9} n={len(vals):>2}  median {statistics.median(vals):.3f}  "
                  f"max {max(vals):.3f}  min {min(vals):.3f}")

    allowed = {name: np.array([rule(p["a"], p["b"]) for p in pairs]) for name, rule in VARIANTS.items()}
    names = list(VARIANTS)
    print("\nflagged as duplicate when cosine >= t (and the guard lets the pair through):")
    print(f"{'':>5} " + " | ".join(f"{n:^34}" for n in names))
    head = f"{'TP':>4} {'FP':>4} {'prec':>6} {'recall':>6} {'F0.5':>6}   "
    print(f"{'t':>5} " + " | ".join(head for _ in names))
    for t in SWEEP:
        cells = []
        for name in names:
            tp, fp, fn, p, r, f = scores(sims, labels, t, allowed[name])
            cells.append(f"{tp:>4} {fp:>4} {p:>6.3f} {r:>6.3f} {f:>6.3f}   ")
        print(f"{t:>5.2f} " + " | ".join(cells))

    rng = random.Random(7)
    samples = [np.array([rng.randrange(len(pairs)) for _ in pairs]) for _ in range(args.bootstrap)]
    print()
    for name in names:
        best = best_threshold(sims, labels, allowed[name])
        tp, fp, fn, p, r, f = scores(sims, labels, best, allowed[name])
        picks = [best_threshold(sims[i], labels[i], allowed[name][i]) for i in samples]
        q = statistics.quantiles(picks, n=20)
        print(f"{name:<34} best t {best:.2f}: precision {p:.3f} recall {r:.3f} F0.5 {f:.3f} "
              f"({tp}/{tp + fn} duplicates caught, {fp}/{int(np.sum(~labels))} different flagged); "
              f"bootstrap median {statistics.median(picks):.2f}, 90% {q[0]:.2f}–{q[-1]:.2f}")
    chosen = best_threshold(sims, labels, allowed[USED])

    print(f"\nmemstore uses {USED!r} at the chosen threshold {chosen:.2f}.")
    print("different pairs it still flags:")
    for s_, pair, ok in sorted(zip(sims, pairs, allowed[USED], strict=True), key=lambda x: -x[0]):
        if pair["label"] == "different" and s_ >= chosen and ok:
            print(f"  {s_:.3f} [{pair['kind']}] {pair['a']!r} / {pair['b']!r}")
    print("different pairs above it that the number guard lets be stored:")
    for s_, pair, ok in sorted(zip(sims, pairs, allowed[USED], strict=True), key=lambda x: -x[0]):
        if pair["label"] == "different" and s_ >= chosen and not ok:
            print(f"  {s_:.3f} [{pair['kind']}] {pair['a']!r} / {pair['b']!r}")
    print("duplicate pairs it misses (cosine below it, or stopped by the guard):")
    for s_, pair, ok in sorted(zip(sims, pairs, allowed[USED], strict=True), key=lambda x: x[0]):
        if pair["label"] == "duplicate" and (s_ < chosen or not ok):
            print(f"  {s_:.3f}{'' if ok else ' (guard)'} [{pair['kind']}] {pair['a']!r} / {pair['b']!r}")
    scifact_check(embedder, args.eval_dir, chosen)


if __name__ == "__main__":
    main()
