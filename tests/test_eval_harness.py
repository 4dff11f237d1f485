"""The retrieval evaluation's own pieces (scripts/eval): metrics and data normalisation.
A harness with a wrong metric or a dropped evidence id would mislead every number it prints."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

from eval.datasets import load_locomo, load_scifact, normalise_evidence, turn_text  # noqa: E402
from eval.metrics import mrr_at, ndcg_at, recall_at  # noqa: E402


def test_recall_at_k():
    assert recall_at(["a", "x", "b"], {"a", "b"}, 2) == 0.5
    assert recall_at(["a", "x", "b"], {"a", "b"}, 3) == 1.0
    assert recall_at([], {"a"}, 10) == 0.0


def test_ndcg_binary_gains():
    assert ndcg_at(["a", "b"], {"a", "b"}, 10) == pytest.approx(1.0)
    # one relevant item at rank 2 of two relevant: (1/log2 3) / (1 + 1/log2 3)
    expected = (1 / math.log2(3)) / (1 + 1 / math.log2(3))
    assert ndcg_at(["x", "a"], {"a", "b"}, 10) == pytest.approx(expected)
    assert ndcg_at(["x"] * 10 + ["a"], {"a"}, 10) == 0.0
    assert ndcg_at(["a", "a"], {"a"}, 10) == pytest.approx(1.0)  # a duplicate earns nothing twice


def test_mrr():
    assert mrr_at(["x", "y", "a"], {"a"}, 10) == pytest.approx(1 / 3)
    assert mrr_at(["x", "y", "a"], {"a"}, 2) == 0.0


def test_evidence_quirks_are_normalised():
    known = {"D8:6", "D9:17", "D9:1", "D4:4", "D4:6", "D11:26", "D30:5"}
    assert normalise_evidence(["D8:6; D9:17"], known) == {"D8:6", "D9:17"}
    assert normalise_evidence(["D9:1 D4:4 D4:6"], known) == {"D9:1", "D4:4", "D4:6"}
    assert normalise_evidence(["D:11:26"], known) == {"D11:26"}
    assert normalise_evidence(["D30:05"], known) == {"D30:5"}
    assert normalise_evidence(["D", "D10:19"], known) == frozenset()  # malformed, nonexistent


def test_turn_text_carries_the_image_caption():
    assert turn_text({"speaker": "Ann", "text": "Look!"}) == "Ann: Look!"
    assert turn_text({"speaker": "Ann", "text": "Look!", "blip_caption": "a photo of a dog"}) == (
        "Ann: Look! [shares a photo of a dog]"
    )


def test_locomo_loader(tmp_path):
    conv = {
        "sample_id": "conv-1",
        "conversation": {
            "speaker_a": "Ann", "speaker_b": "Bob",
            "session_1_date_time": "1:56 pm on 8 May, 2023",
            "session_1": [{"speaker": "Ann", "dia_id": "D1:1", "text": "Hi"},
                          {"speaker": "Bob", "dia_id": "D1:2", "text": "Hello"}],
            "session_2_date_time": "9 May, 2023",  # a date without a session
        },
        "qa": [{"question": "Who said hello?", "answer": "Bob", "evidence": ["D1:2"], "category": 4},
               {"question": "No evidence", "answer": "-", "evidence": [], "category": 1},
               {"question": "Dangling", "adversarial_answer": "-", "evidence": ["D7:7"], "category": 5}],
    }
    (tmp_path / "locomo").mkdir()
    (tmp_path / "locomo" / "locomo10.json").write_text(json.dumps([conv]))
    [loaded] = load_locomo(tmp_path)
    assert loaded.turns == [("D1:1", "Ann: Hi", "1:56 pm on 8 May, 2023"),
                            ("D1:2", "Bob: Hello", "1:56 pm on 8 May, 2023")]
    assert [(q.text, q.category, set(q.evidence)) for q in loaded.questions] == [
        ("Who said hello?", 4, {"D1:2"})
    ]


def test_scifact_loader_keeps_test_queries_only(tmp_path):
    root = tmp_path / "scifact"
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text(
        json.dumps({"_id": "10", "title": "Title", "text": "Body."}) + "\n"
    )
    (root / "queries.jsonl").write_text(
        "".join(json.dumps(q) + "\n" for q in ({"_id": "1", "text": "claim one"}, {"_id": "2", "text": "x"}))
    )
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n1\t10\t1\n")
    data = load_scifact(tmp_path)
    assert data.docs == [("10", "Title Body.")]
    assert data.queries == [("1", "claim one")]
    assert data.qrels == {"1": frozenset({"10"})}
