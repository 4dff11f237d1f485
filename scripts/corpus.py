"""Realistic short texts for benchmarks, drawn reproducibly from the evaluation data.

LoCoMo chat turns and SciFact abstract sentences (../shared/eval), shuffled with a
seed. The data is read from the path given, never copied into the repository.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

DEFAULT_EVAL = Path(__file__).resolve().parents[2] / "shared" / "eval"
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")


def load_texts(eval_dir: Path = DEFAULT_EVAL) -> list[str]:
    """Every distinct LoCoMo turn and SciFact sentence (20–400 chars), in a fixed order."""
    texts: list[str] = []
    for conv in json.loads((eval_dir / "locomo" / "locomo10.json").read_text()):
        c = conv["conversation"]
        for key, turns in c.items():
            if key.startswith("session_") and isinstance(turns, list):
                texts.extend(f"{t['speaker']}: {t['text']}" for t in turns)
    with (eval_dir / "scifact" / "corpus.jsonl").open() as fh:
        for line in fh:
            doc = json.loads(line)
            texts.extend(_SENTENCE.split(doc["text"]))
    seen: dict[str, None] = {}
    for text in texts:
        text = text.strip()
        if 20 <= len(text) <= 400:
            seen.setdefault(text)
    return list(seen)


def sample(n: int, seed: int = 13, eval_dir: Path = DEFAULT_EVAL) -> list[str]:
    """``n`` texts, reproducible from ``seed``; beyond the pool, pairs of texts are joined."""
    pool = load_texts(eval_dir)
    rng = random.Random(seed)
    rng.shuffle(pool)
    if n <= len(pool):
        return pool[:n]
    out = list(pool)
    seen = set(out)
    while len(out) < n:
        text = f"{rng.choice(pool)} {rng.choice(pool)}"
        if text not in seen:
            seen.add(text)
            out.append(text)
    return out


def queries(n: int, seed: int = 99, eval_dir: Path = DEFAULT_EVAL) -> list[str]:
    """``n`` real questions: LoCoMo questions and SciFact claims, reproducible from ``seed``."""
    qs = [q["question"] for conv in json.loads((eval_dir / "locomo" / "locomo10.json").read_text())
          for q in conv["qa"] if q.get("question")]
    with (eval_dir / "scifact" / "queries.jsonl").open() as fh:
        qs.extend(json.loads(line)["text"] for line in fh)
    rng = random.Random(seed)
    rng.shuffle(qs)
    return qs[:n]
