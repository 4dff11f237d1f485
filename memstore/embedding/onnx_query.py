"""The light query encoder: onnxruntime + tokenizers driven directly, bit-identical to fastembed,
for one-shot recalls that should not pay for importing fastembed."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import settings
from ..errors import ModelError
from ..notices import announce
from .base import xxh3_file

if TYPE_CHECKING:
    import numpy as np

__all__ = ["OnnxQueryEncoder"]


class OnnxQueryEncoder:
    """Embeds one query with onnxruntime + tokenizers directly, exactly as fastembed would.

    Same ``model.onnx``, the tokenizer set up as fastembed's ``load_tokenizer`` does
    (truncation at the smaller of ``model_max_length``/``max_length``, special tokens,
    padding to the longest text of a batch), mean pooling over the attention mask in float64
    and L2 normalisation: so it embeds a batch of documents exactly as fastembed's ``embed``
    does too, and a process needs one ONNX session, not two. Importing onnxruntime +
    tokenizers costs ~0.3 s where fastembed costs ~1.2 s, which is what a one-shot recall pays.

    The session runs on one thread unless given more (one short query gains nothing from a
    thread pool; a bulk embedding does) and
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
        return settings.cache_dir() / "query-models" / f"{xxhash.xxh3_64_hexdigest(key.encode())}.onnx"

    def _session_from_saved_graph(self) -> Any:
        ort = _onnxruntime()

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
        ort = _onnxruntime()
        announce("memstore: preparing the embedding model for first use (a few seconds, once)")

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
                fd = os.open(sidecar, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w") as fh:
                    fh.write(json.dumps({"digest": digest, "onnxruntime": ort.__version__}))
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
    os.environ.update(ORT_DISABLE_TELEMETRY="1")  # a write: forced, whatever the user set
    import onnxruntime as ort

    if not getattr(_onnxruntime, "quiet", False):
        disable = getattr(ort, "disable_telemetry_events", None)
        if disable is not None:
            disable()
        _onnxruntime.quiet = True  # type: ignore[attr-defined]
    return ort
