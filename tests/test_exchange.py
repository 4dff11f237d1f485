"""Export and import: lossless round trips, idempotence, merging, bad files."""

from __future__ import annotations

import base64
import io
import json

import pytest
from sqlitefile import raw

import memstore
from memstore.embedding import HashEmbedder


def open_store(path, embedder=None):
    return memstore.open(path, embedder=embedder or HashEmbedder())


def all_rows(store):
    """Every column of every memory (seq aside), and every embedding, as comparable data."""
    cols = [r[1] for r in raw(store).execute("PRAGMA table_info(memories)") if r[1] != "seq"]
    rows = raw(store).execute(f"SELECT {', '.join(cols)} FROM memories ORDER BY id").fetchall()
    vectors = raw(store).execute(
        "SELECT m.id, e.model, e.content_hash, e.vector FROM embeddings e "
        "JOIN memories m USING (seq) ORDER BY m.id"
    ).fetchall()
    return [dict(zip(cols, row, strict=True)) for row in rows], vectors


def populate(store):
    """A store with every state: live, tagged, metadata, project, expiring, versions, tombstones."""
    a = store.capture("We chose PostgreSQL for JSONB", namespace="decisions", tags=["db"],
                      metadata={"ticket": "OPS-12", "n": [1, 2]}, source="cli")
    store.capture("Flaky CI was a race in the retry backoff", namespace="learnings", project="api",
                  branch="main")
    store.capture("Vacation starts on Friday", ttl="30d")
    v1 = store.capture("Standup is at 9:30")
    v2 = store.update(v1.id, "Standup moved to 10:00", tags=["team"])
    store.update(v2.id, "Standup moved to 10:15")
    gone = store.capture("Old wifi password hint")
    store.forget(gone.id)
    store.capture("Ünïcödé and emoji 🎉 survive", metadata={"lang": "de"})
    return a


def test_round_trip_is_lossless_and_recall_is_identical(tmp_path):
    path = tmp_path / "export.jsonl"
    with open_store(tmp_path / "a") as src:
        populate(src)
        assert src.export_jsonl(path) == 8
        rows, vectors = all_rows(src)
        queries = ["database JSONB", "standup time", "CI race", "vacation", "emoji"]
        expected = {q: [(h.memory.id, h.score, h.similarity) for h in src.recall(q)] for q in queries}
        listed = [m.to_dict() for m in src.list()]
    with open_store(tmp_path / "b") as dst:
        result = dst.import_jsonl(path)
        assert (result.format, result.read, result.created, result.unchanged) == ("memstore-export", 8, 8, 0)
        assert result.embedded == 5  # live current ones; history and tombstones need no vector
        rows_b, vectors_b = all_rows(dst)
        assert rows_b == rows
        live = {r["id"] for r in rows if not r["deleted"] and not r["superseded_by"]}
        live_vectors = {v for v in vectors if v[0] in live}
        assert live_vectors <= set(vectors_b)
        assert {q: [(h.memory.id, h.score, h.similarity) for h in dst.recall(q)] for q in queries} == expected
        assert [m.to_dict() for m in dst.list()] == listed


def test_import_twice_changes_nothing(tmp_path):
    path = tmp_path / "export.jsonl"
    with open_store(tmp_path / "a") as src:
        populate(src)
        src.export_jsonl(path)
    with open_store(tmp_path / "b") as dst:
        dst.import_jsonl(path)
        before = all_rows(dst)
        head = raw(dst).execute("SELECT max(op) FROM vector_log").fetchone()
        again = dst.import_jsonl(path)
        assert (again.created, again.unchanged, again.updated, again.embedded) == (0, 8, 0, 0)
        assert all_rows(dst) == before
        assert raw(dst).execute("SELECT max(op) FROM vector_log").fetchone() == head
    with open_store(tmp_path / "a") as src:  # into the very store it came from
        before = all_rows(src)
        assert src.import_jsonl(path).unchanged == 8
        assert all_rows(src) == before


def test_with_vectors_skips_embedding_for_the_same_model(tmp_path, monkeypatch):
    path = tmp_path / "export.jsonl"
    with open_store(tmp_path / "a") as src:
        populate(src)
        src.export_jsonl(path, with_vectors=True)
        _, vectors = all_rows(src)
    lines = path.read_text().splitlines()
    assert json.loads(lines[0])["vectors"] is True
    record = json.loads(lines[1])
    assert record["embedding"]["model"] == HashEmbedder.model_id and record["embedding"]["dimension"] == 384
    assert len(base64.b64decode(record["embedding"]["data"])) == 384 * 4
    with open_store(tmp_path / "b", embedder=NoEmbedding()) as dst:
        result = dst.import_jsonl(path)
        assert result.embedded == 0
        assert all_rows(dst)[1] == vectors


class NoEmbedding(HashEmbedder):
    """The store's model, refusing to embed documents: the file's vectors must be used."""

    def embed(self, texts):
        pytest.fail("should not embed")


class OtherModel(HashEmbedder):
    model_id = "other:test-model:384"


def test_vectors_of_another_model_are_recomputed(tmp_path):
    path = tmp_path / "export.jsonl"
    with open_store(tmp_path / "a", OtherModel()) as src:
        populate(src)
        src.export_jsonl(path, with_vectors=True)
    with open_store(tmp_path / "b") as dst:
        result = dst.import_jsonl(path)
        assert result.embedded == 5
        assert dst.stats()["without_current_vector"] == 0
        assert dst.recall("standup", mode="semantic")[0].memory.text == "Standup moved to 10:15"


def test_filters_export_whole_version_chains(tmp_path):
    path = tmp_path / "export.jsonl"
    with open_store(tmp_path / "a") as src:
        v1 = src.capture("Standup is at 9:30", namespace="team")
        v2 = src.update(v1.id, "Standup moved to 10:00", tags=["time"])
        src.capture("unrelated", namespace="other")
        assert src.export_jsonl(path, tags=["time"]) == 2
        assert src.export_jsonl(io.StringIO(), namespace="other") == 1
        assert src.export_jsonl(io.StringIO(), current_only=True) == 2
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines[0]["filters"] == {"tags": ["time"]}
    assert [r["id"] for r in lines[1:]] == [v1.id, v2.id]
    with open_store(tmp_path / "b") as dst:
        dst.import_jsonl(path)
        assert [m.id for m in dst.history(v1.id)] == [v1.id, v2.id]


def test_current_only_export_drops_history_and_tombstones(tmp_path):
    out = io.StringIO()
    with open_store(tmp_path / "a") as src:
        populate(src)
        n = src.export_jsonl(out, current_only=True)
        assert n == len(src.list())
    records = [json.loads(line) for line in out.getvalue().splitlines()[1:]]
    assert all(r["supersedes"] is None and r["superseded_by"] is None and not r["deleted"] for r in records)


def test_newer_state_in_the_file_wins(tmp_path):
    early, late = tmp_path / "early.jsonl", tmp_path / "late.jsonl"
    with open_store(tmp_path / "a") as src:
        keep = src.capture("a memory forgotten later")
        edit = src.capture("a memory updated later")
        src.export_jsonl(early)
        src.forget(keep.id)
        new = src.update(edit.id, "a memory updated later, now corrected")
        src.export_jsonl(late)
    with open_store(tmp_path / "b") as dst:
        dst.import_jsonl(early)
        result = dst.import_jsonl(late)
        assert (result.created, result.updated, result.unchanged) == (1, 2, 0)
        assert dst.get(keep.id).deleted
        assert dst.get(edit.id).superseded_by == new.id
        assert [m.id for m in dst.list()] == [new.id]
        assert dst.import_jsonl(early).unchanged == 2  # older state never overwrites newer


def test_same_text_live_under_another_id_is_merged(tmp_path):
    path = tmp_path / "export.jsonl"
    with open_store(tmp_path / "a") as src:
        theirs = src.capture("Use ruff for linting")
        src.export_jsonl(path)
    with open_store(tmp_path / "b") as dst:
        mine = dst.capture("Use ruff for linting")
        result = dst.import_jsonl(path)
        assert (result.created, result.merged) == (1, 1)
        assert dst.get(theirs.id).superseded_by == mine.id
        assert [m.id for m in dst.list()] == [mine.id]
        assert dst.import_jsonl(path).unchanged == 1


def test_a_changed_version_is_refused_and_nothing_is_written(tmp_path):
    path = tmp_path / "export.jsonl"
    with open_store(tmp_path / "a") as src:
        m = src.capture("original text")
        src.capture("second memory")
        src.export_jsonl(path)
        lines = path.read_text().splitlines()
        record = json.loads(lines[1])
        record["text"] = "tampered text"
        extra = dict(record, id="01EXTRAMEMORY0000000000000", text="new one")
        path.write_text("\n".join([json.dumps(dict(json.loads(lines[0]), count=3)), json.dumps(record),
                                   lines[2], json.dumps(extra)]) + "\n")
        with pytest.raises(memstore.InvalidInputError, match=f"{m.id} in the file differs"):
            src.import_jsonl(path)
        assert src.stats()["memories"] == 2


@pytest.mark.parametrize(
    "mutate,message",
    [
        (lambda h, r: (dict(h, version=99), r), "format version 99"),
        (lambda h, r: (dict(h, count=5), r), "truncated"),
        (lambda h, r: (h, dict(r, text="")), "line 2: text is empty"),
        (lambda h, r: (h, dict(r, created_at="yesterday-ish")), "line 2: created_at"),
        (lambda h, r: (h, dict(r, created_at="2024-01-01T00:00:00")), "no time zone"),
        (lambda h, r: (h, dict(r, deleted="no")), "deleted must be"),
        (lambda h, r: (h, dict(r, colour="red")), "unknown field"),
        (lambda h, r: (h, {k: v for k, v in r.items() if k != "namespace"}), "missing field"),
        (lambda h, r: (h, dict(r, embedding={"model": "m", "dimension": 3, "data": "!!"})), "base64"),
        (lambda h, r: (h, dict(r, superseded_by=r["id"])), "supersede itself"),
    ],
)
def test_bad_export_files_are_refused(tmp_path, mutate, message):
    out = io.StringIO()
    with open_store(tmp_path / "a") as src:
        src.capture("only memory")
        src.export_jsonl(out)
    head, record = (json.loads(line) for line in out.getvalue().splitlines())
    head, record = mutate(head, record)
    text = json.dumps(head) + "\n" + json.dumps(record) + "\n"
    with open_store(tmp_path / "b") as dst:
        with pytest.raises(memstore.InvalidInputError, match=message):
            dst.import_jsonl(io.StringIO(text))
        assert dst.stats()["memories"] == 0


def test_plain_jsonl_still_imports_and_export_lines_without_header_are_explained(tmp_path):
    with open_store(tmp_path / "a") as s:
        plain = '"bare string"\n{"text": "object", "tags": ["t"], "ttl": "1d"}\n'
        result = s.import_jsonl(io.StringIO(plain))
        assert result.format == "jsonl" and result.created == 2
        assert result.results[1].expires_at is not None
        out = io.StringIO()
        s.export_jsonl(out)
        body = "\n".join(out.getvalue().splitlines()[1:])
        with pytest.raises(memstore.InvalidInputError, match="without its header"):
            s.import_jsonl(io.StringIO(body))
        with pytest.raises(memstore.InvalidInputError, match="plain JSONL"):
            s.import_jsonl(io.StringIO(out.getvalue()), namespace="x")


def test_export_to_a_path_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "out.jsonl"
    path.write_text("previous export\n")
    with open_store(tmp_path / "a") as s:
        s.capture("one")
        monkeypatch.setattr("memstore.exchange.encode_memory", lambda *a, **k: 1 / 0)
        with pytest.raises(ZeroDivisionError):
            s.export_jsonl(path)
    assert path.read_text() == "previous export\n"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []
