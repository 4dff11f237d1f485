"""The labelled evaluation data, read from ``--eval-dir`` (never copied into the repository).

LoCoMo: one unit per conversation turn, questions with evidence turn ids (normalised here:
the file has a few malformed or dangling ids). BEIR SciFact: abstracts, test claims, qrels.
See ../shared/eval/README.md for the provenance of both.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

CATEGORIES = {1: "multi-hop", 2: "temporal", 3: "open-domain", 4: "single-hop", 5: "adversarial"}

_DIA = re.compile(r"D:?(\d+):(\d+)")


@dataclass
class Question:
    qid: str
    text: str
    category: int
    evidence: frozenset[str]


@dataclass
class Conversation:
    """One LoCoMo conversation: its turns (dia_id, memory text, session date) and questions."""

    sample_id: str
    turns: list[tuple[str, str, str]] = field(default_factory=list)
    questions: list[Question] = field(default_factory=list)


def turn_text(turn: dict) -> str:
    """The memory text of a turn: ``"{speaker}: {text}"`` plus the shared image's caption."""
    text = f"{turn['speaker']}: {turn['text']}"
    if turn.get("blip_caption"):
        text += f" [shares {turn['blip_caption']}]"
    return text


def normalise_evidence(raw: list[str], known: set[str]) -> frozenset[str]:
    """Evidence ids as ``D<session>:<turn>`` that exist in the conversation.

    Handles ``"D8:6; D9:17"`` and ``"D9:1 D4:4"`` (several ids in one string), ``"D:11:26"``
    (stray colon), ``"D30:05"`` (leading zero); drops ``"D"`` and ids of turns that do not exist.
    """
    ids = set()
    for item in raw:
        for session, turn in _DIA.findall(item):
            dia = f"D{int(session)}:{int(turn)}"
            if dia in known:
                ids.add(dia)
    return frozenset(ids)


def load_locomo(eval_dir: Path) -> list[Conversation]:
    """The 10 LoCoMo conversations; questions without any resolvable evidence are left out."""
    data = json.loads((eval_dir / "locomo" / "locomo10.json").read_text(encoding="utf-8"))
    conversations = []
    for conv in data:
        c = conv["conversation"]
        out = Conversation(conv["sample_id"])
        sessions = sorted(
            (int(k.split("_")[1]), v) for k, v in c.items()
            if re.fullmatch(r"session_\d+", k) and isinstance(v, list)
        )
        for number, turns in sessions:
            when = c.get(f"session_{number}_date_time", "")
            out.turns.extend((t["dia_id"], turn_text(t), when) for t in turns)
        known = {dia for dia, _, _ in out.turns}
        for i, qa in enumerate(conv["qa"]):
            evidence = normalise_evidence(qa.get("evidence", []), known)
            if evidence:
                out.questions.append(
                    Question(f"{conv['sample_id']}#{i}", qa["question"], int(qa["category"]), evidence)
                )
        conversations.append(out)
    return conversations


@dataclass
class SciFact:
    docs: list[tuple[str, str]]  # (doc id, title + " " + text)
    queries: list[tuple[str, str]]  # (query id, claim) — test queries only
    qrels: dict[str, frozenset[str]]


def load_scifact(eval_dir: Path) -> SciFact:
    """The BEIR SciFact corpus, the 300 test claims and their relevance judgments."""
    root = eval_dir / "scifact"
    docs = []
    with (root / "corpus.jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            doc = json.loads(line)
            docs.append((str(doc["_id"]), f"{doc['title']} {doc['text']}".strip()))
    qrels: dict[str, set[str]] = {}
    with (root / "qrels" / "test.tsv").open(encoding="utf-8") as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            if int(row["score"]) > 0:
                qrels.setdefault(str(row["query-id"]), set()).add(str(row["corpus-id"]))
    queries = []
    with (root / "queries.jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            q = json.loads(line)
            if str(q["_id"]) in qrels:
                queries.append((str(q["_id"]), q["text"]))
    return SciFact(docs, queries, {k: frozenset(v) for k, v in qrels.items()})
