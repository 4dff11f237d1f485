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
    return sample_parts(n, seed, eval_dir)[0]


def sample_parts(
    n: int, seed: int = 13, eval_dir: Path = DEFAULT_EVAL
) -> tuple[list[str], list[tuple[int, ...]], list[str]]:
    """The texts of :func:`sample`, what each is made of (indices into the shuffled pool:
    one, or two for a joined pair), and that pool."""
    pool = load_texts(eval_dir)
    rng = random.Random(seed)
    rng.shuffle(pool)
    if n <= len(pool):
        return pool[:n], [(i,) for i in range(n)], pool
    out = list(pool)
    parts: list[tuple[int, ...]] = [(i,) for i in range(len(pool))]
    seen = set(out)
    indices = range(len(pool))
    while len(out) < n:
        a, b = rng.choice(indices), rng.choice(indices)  # same draws as rng.choice(pool)
        text = f"{pool[a]} {pool[b]}"
        if text not in seen:
            seen.add(text)
            out.append(text)
            parts.append((a, b))
    return out, parts, pool


def scifact_docs(eval_dir: Path = DEFAULT_EVAL) -> list[tuple[str, str]]:
    """(doc id, title + " " + text) of every SciFact abstract, in file order."""
    with (eval_dir / "scifact" / "corpus.jsonl").open() as fh:
        docs = [json.loads(line) for line in fh]
    return [(d["_id"], f"{d['title']} {d['text']}".strip()) for d in docs]


def scifact_test(eval_dir: Path = DEFAULT_EVAL) -> tuple[dict[str, str], dict[str, set[str]]]:
    """The SciFact test queries (id -> text) and their relevant doc ids."""
    qrels: dict[str, set[str]] = {}
    lines = (eval_dir / "scifact" / "qrels" / "test.tsv").read_text().splitlines()[1:]
    for line in lines:
        qid, did, score = line.split("\t")
        if int(score) > 0:
            qrels.setdefault(qid, set()).add(did)
    with (eval_dir / "scifact" / "queries.jsonl").open() as fh:
        texts = {q["_id"]: q["text"] for q in map(json.loads, fh) if q["_id"] in qrels}
    return texts, qrels


def queries(n: int, seed: int = 99, eval_dir: Path = DEFAULT_EVAL) -> list[str]:
    """``n`` real questions: LoCoMo questions and SciFact claims, reproducible from ``seed``."""
    qs = [q["question"] for conv in json.loads((eval_dir / "locomo" / "locomo10.json").read_text())
          for q in conv["qa"] if q.get("question")]
    with (eval_dir / "scifact" / "queries.jsonl").open() as fh:
        qs.extend(json.loads(line)["text"] for line in fh)
    rng = random.Random(seed)
    rng.shuffle(qs)
    return qs[:n]
