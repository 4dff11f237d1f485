"""The light query encoder: onnxruntime + tokenizers driven directly, bit-identical to fastembed,
for one-shot recalls that should not pay for importing fastembed."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import settings
from ..errors import ModelError
from .base import xxh3_file

if TYPE_CHECKING:
    import numpy as np

__all__ = ["OnnxQueryEncoder"]


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
        tokenizer.no_padding()  # one text: padding to the longest in the batch adds nothing
        session = self._session_from_saved_graph() or self._session_saving_graph()
        self._inputs = {node.name for node in session.get_inputs()}
        self._tokenizer, self._session = tokenizer, session

    def _options(self, level: str) -> Any:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
        options.intra_op_num_threads = self.threads or 1
        options.inter_op_num_threads = self.threads or 1
        options.enable_cpu_mem_arena = False
        return options

    def saved_graph_path(self) -> Path:
        """Where the optimised graph of this model (for this onnxruntime) is kept."""
        import onnxruntime as ort
        import xxhash

        st = (self.model_dir / "model.onnx").stat()
        key = f"{self.model_dir.resolve()}|{st.st_size}|{st.st_mtime_ns}|{ort.__version__}"
        return settings.cache_dir() / "query-models" / f"{xxhash.xxh3_64_hexdigest(key.encode())}.onnx"

    def _session_from_saved_graph(self) -> Any:
        import onnxruntime as ort

        path = self.saved_graph_path()
        sidecar = path.with_suffix(".json")
        try:
            expected = json.loads(sidecar.read_text())
            ok = isinstance(expected, dict) and expected.get("digest") == xxh3_file(path)
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
        import onnxruntime as ort

        options = self._options("ORT_ENABLE_EXTENDED")  # portable: no CPU-specific layouts
        path = self.saved_graph_path()
        tmp = path.with_name(f".{path.name}.{os.urandom(4).hex()}.tmp")
        try:
            settings.private_dir(path.parent)
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
                digest = xxh3_file(tmp)
                os.replace(tmp, path)
                sidecar = path.with_suffix(f".json.{os.urandom(4).hex()}.tmp")
                sidecar.write_text(json.dumps({"digest": digest, "onnxruntime": ort.__version__}))
                os.replace(sidecar, path.with_suffix(".json"))
            except OSError:  # a cache: not saving it only costs the next process time
                tmp.unlink(missing_ok=True)
        return session

    def encode(self, text: str) -> np.ndarray:
        """(dimension,) float32, L2-normalised."""
        import numpy as np

        if self._session is None:
            try:
                self._load()
            except ModelError:
                raise
            except Exception as exc:
                raise ModelError(f"cannot load the model in {self.model_dir}: {exc}") from exc
        encoding = self._tokenizer.encode(text)
        ids = np.array([encoding.ids], dtype=np.int64)
        mask = np.array([encoding.attention_mask], dtype=np.int64)
        feed = {"input_ids": ids}
        if "attention_mask" in self._inputs:
            feed["attention_mask"] = mask
        if "token_type_ids" in self._inputs:
            feed["token_type_ids"] = np.zeros_like(ids)
        output = self._session.run(None, feed)[0]
        summed = np.sum(output, axis=1, where=mask[:, :, np.newaxis].astype(bool), dtype=np.float64)
        pooled = summed / np.maximum(np.sum(mask, axis=1, keepdims=True), 1e-9)
        norm = np.maximum(np.linalg.norm(pooled, ord=2, axis=1, keepdims=True), 1e-12)
        return (pooled / norm).astype(output.dtype, copy=False)[0]
