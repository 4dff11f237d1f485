"""The public surface: what `import memstore` offers and what it costs."""

import subprocess
import sys

import memstore


def test_all_is_pinned():
    assert memstore.__all__ == [
        "CaptureResult",
        "ConflictError",
        "CorruptDatabaseError",
        "Embedder",
        "EmbedderFallbackWarning",
        "FastEmbedder",
        "GitError",
        "HashEmbedder",
        "Hit",
        "ImportResult",
        "InvalidInputError",
        "Memory",
        "MemoryStore",
        "MemstoreError",
        "ModelError",
        "ModelInfo",
        "ModelMismatchError",
        "ModelMismatchWarning",
        "NotFoundError",
        "PurgeResult",
        "PurgedMemory",
        "SchemaTooNewError",
        "StoreError",
        "StoreNotWritableError",
        "__version__",
        "open",
    ]
    assert memstore.__all__ == sorted(memstore.__all__)
    for name in memstore.__all__:
        assert hasattr(memstore, name)


def test_import_is_light():
    code = (
        "import sys, memstore; heavy = [m for m in ('fastembed', 'onnxruntime', 'usearch', "
        "'numpy', 'sqlite_utils', 'huggingface_hub', 'mcp', 'pydantic') if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_usearch_then_onnxruntime_import_does_not_crash():
    # usearch 2.26.2+ segfaults when onnxruntime is imported after it; pinned below that.
    code = "import usearch.index, onnxruntime; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_error_tree():
    assert issubclass(memstore.InvalidInputError, ValueError)
    assert issubclass(memstore.NotFoundError, LookupError)
    assert issubclass(memstore.ConflictError, memstore.InvalidInputError)
    for name in ("InvalidInputError", "NotFoundError", "StoreError", "ModelError"):
        assert issubclass(getattr(memstore, name), memstore.MemstoreError)
    assert issubclass(memstore.SchemaTooNewError, memstore.StoreError)
    assert issubclass(memstore.ModelMismatchError, memstore.ModelError)
