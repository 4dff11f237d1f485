"""Files of the derived indexes (vector and keyword): a file made durable, and the JSON that
names an index's current generation replaced atomically (readers see the old JSON or the
new one, never half of either)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["fsync", "replace_json"]


def fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` beside ``path`` (``<name>.json.<random>.tmp``), fsync it, then replace."""
    tmp = path.with_suffix(f".json.{os.urandom(4).hex()}.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    fsync(tmp)
    os.replace(tmp, path)
