"""Text → vector: the Embedder protocol and the embedders memstore ships.

``base`` (protocol, ModelInfo, constants), ``hash``, ``fastembed`` (the bundled model),
``onnx_query`` (the light query encoder), ``query_cache``, ``query_worker``,
``sentence_transformers`` and ``resolve`` (which one to use). Importing this package loads
none of numpy, fastembed, onnxruntime or tokenizers: they load on the first embed.
"""

from .base import BUNDLED_MODEL_ID, Embedder, EmbedderFallbackWarning, ModelInfo
from .fastembed import FastEmbedder
from .hash import HashEmbedder
from .resolve import resolve_embedder

__all__ = [
    "BUNDLED_MODEL_ID",
    "Embedder",
    "EmbedderFallbackWarning",
    "FastEmbedder",
    "HashEmbedder",
    "ModelInfo",
    "resolve_embedder",
]
