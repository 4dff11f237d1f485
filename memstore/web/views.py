"""Rendering helpers: the Jinja environment (autoescape always on, whatever the file name)
and the small formatting functions the templates use.

Memory text, tags, metadata and log lines are attacker-controlled: they only ever reach the
page as Jinja expressions (escaped) and are never marked safe.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

__all__ = ["TEMPLATES_DIR", "STATIC_DIR", "environment", "evidence"]

HERE = Path(__file__).resolve().parent
TEMPLATES_DIR = HERE / "templates"
STATIC_DIR = HERE / "static"


def environment() -> Any:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR)),
        autoescape=True,  # every template, not only *.html
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(when=when, iso=iso, meta_value=meta_value, first_line=first_line)
    env.globals.update(evidence=evidence)
    return env


def when(value: datetime | None) -> str:
    """A timestamp in the server's local time, to the minute."""
    return value.astimezone().strftime("%Y-%m-%d %H:%M") if value is not None else ""


def iso(value: datetime | None) -> str:
    return value.astimezone().isoformat(timespec="seconds") if value is not None else ""


def meta_value(value: Any) -> str:
    """A metadata value as text (nested values as compact JSON)."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def first_line(text: str, width: int = 160) -> str:
    lines = text.strip().splitlines()
    line = lines[0] if lines else ""
    return line if len(line) <= width else line[: width - 1] + "…"


def evidence(hit: Any) -> list[tuple[str, str, str]]:
    """A hit's evidence as (css class, label, explanation) chips, the same facts the CLI prints."""
    chips = [("score", f"score {hit.score:.3f}",
              "fused score = 0.35 × keyword strength (bm25 relative to the best match) + 0.65 × cosine")]
    if hit.keyword_rank is not None:
        bm25 = f" · bm25 {hit.bm25:.2f}" if hit.bm25 is not None else ""
        chips.append(("kw", f"keyword #{hit.keyword_rank}{bm25}", "rank in the full-text (bm25) list"))
    elif hit.bm25 is not None:
        chips.append(("kw off", f"bm25 {hit.bm25:.2f}", "not in the keyword list; its bm25 is known"))
    if hit.vector_rank is not None:
        cos = f" · cos {hit.similarity:.3f}" if hit.similarity is not None else ""
        chips.append(("vec", f"vector #{hit.vector_rank}{cos}", "rank in the embedding (cosine) list"))
    elif hit.similarity is not None:
        chips.append(("vec off", f"cos {hit.similarity:.3f}", "not in the vector list; its cosine is known"))
    return chips
