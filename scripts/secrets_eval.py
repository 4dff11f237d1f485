"""How well capture's secret redaction works: recall on fake secrets, false positives on
ordinary text, for memstore's redactor and (when installed) detect-secrets.

    python scripts/secrets_eval.py [--eval-dir ../shared/eval] [--per-template 1]
                                   [--changelog 2000] [--commits 1000] [--detector memstore]
                                   [--show 10]

A secret counts as redacted when no piece of it of min(8, its length) characters is
left in the output. A false positive is an ordinary text that comes out changed.
Targets (issue 5): recall >= 95 % on >= 50 secrets of >= 15 kinds; 0 false positives on
>= 1,000 ordinary texts. See secrets_corpus.py for where each corpus comes from.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from secrets_corpus import (  # noqa: E402
    DEFAULT_EVAL,
    commit_messages,
    debian_changelog_entries,
    fake_secrets,
    locomo_turns,
    scifact_sentences,
)

from memstore.redact import redact  # noqa: E402

Detector = Callable[[str], str]


def memstore_detector() -> Detector:
    return lambda text: redact(text).text


def detect_secrets_detector() -> Detector:
    """detect-secrets' file scan (default plugins and filters, as `detect-secrets scan` runs
    on a file named memory.txt). It reports values, sometimes only a prefix (GitHub: 'ghp'),
    not spans: to be generous, the whole whitespace-delimited token holding a reported
    value is replaced."""
    import re

    from detect_secrets.core.scan import _process_line_based_plugins
    from detect_secrets.settings import default_settings

    def run(text: str) -> str:
        lines = text.split("\n")
        with default_settings():
            found = list(_process_line_based_plugins(
                lines=list(enumerate(lines, start=1)), filename="memory.txt"
            ))
        for secret in found:
            value = secret.secret_value or ""
            number = secret.line_number - 1
            line = lines[number]
            at = line.find(value) if value else -1
            if at < 0:
                continue
            start = max((m.end() for m in re.finditer(r"\s", line[:at])), default=0)
            stop = at + len(value)
            more = re.search(r"\s", line[stop:])
            stop = stop + more.start() if more else len(line)
            lines[number] = line[:start] + f"[REDACTED:{secret.type}]" + line[stop:]
        return "\n".join(lines)

    return run


def leaked(secret: str, output: str) -> bool:
    """Whether any min(8, len) character window of the secret survives in the output."""
    width = min(8, len(secret))
    return any(secret[i : i + width] in output for i in range(0, len(secret) - width + 1))


def evaluate(name: str, detector: Detector, secrets, ordinary, show: int) -> None:
    by_kind: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    misses = []
    start = time.perf_counter()
    for kind, secret, text in secrets:
        out = detector(text)
        # A secret's lines are checked one by one (a key block is many lines).
        pieces = [p for p in secret.replace("\\n", "\n").splitlines() if len(p) >= 4] or [secret]
        bad = any(leaked(p, out) for p in pieces if p.strip("-").strip() and "BEGIN" not in p
                  and "END" not in p) or not pieces
        by_kind[kind][0] += 1
        by_kind[kind][1] += 0 if bad else 1
        if bad:
            misses.append((kind, text, out))
    secret_time = time.perf_counter() - start
    fps = []
    start = time.perf_counter()
    for source, text in ordinary:
        out = detector(text)
        if out != text:
            fps.append((source, text, out))
    ordinary_time = time.perf_counter() - start

    total = sum(n for n, _ in by_kind.values())
    found = sum(k for _, k in by_kind.values())
    print(f"\n== {name} ==")
    print(f"{'kind':<22} {'secrets':>7} {'redacted':>8}")
    for kind in sorted(by_kind):
        n, k = by_kind[kind]
        print(f"{kind:<22} {n:>7} {k:>8}")
    print(f"recall: {found}/{total} = {found / total:.1%} over {len(by_kind)} kinds")
    sources: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for source, _ in ordinary:
        sources[source][0] += 1
    for source, _, _ in fps:
        sources[source][1] += 1
    for source, (n, k) in sources.items():
        print(f"false positives on {source}: {k}/{n}")
    print(f"false positives: {len(fps)}/{len(ordinary)}")
    per_text_ms = 1000 * (secret_time + ordinary_time) / (len(secrets) + len(ordinary))
    print(f"time: {per_text_ms:.3f} ms per text (mean over all {len(secrets) + len(ordinary)} texts)")
    for kind, text, out in misses[:show]:
        print(f"  MISS {kind}: {text[:160]!r}\n       -> {out[:160]!r}")
    for source, text, out in fps[:show]:
        print(f"  FP {source}: {text[:160]!r}\n       -> {out[:160]!r}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--eval-dir", type=Path, default=DEFAULT_EVAL)
    parser.add_argument("--per-template", type=int, default=1,
                        help="fake secrets generated per sentence template")
    parser.add_argument("--changelog", type=int, default=2000, help="Debian changelog entries")
    parser.add_argument("--commits", type=int, default=1000, help="generated commit messages")
    parser.add_argument("--scifact", type=int, default=2000, help="SciFact abstract sentences")
    parser.add_argument("--detector", choices=["memstore", "detect-secrets", "both"], default="both")
    parser.add_argument("--show", type=int, default=10, help="misses/false positives to print")
    args = parser.parse_args()

    secrets = fake_secrets(args.per_template)
    ordinary = [("locomo", t) for t in locomo_turns(args.eval_dir)]
    ordinary += [("debian-changelog", t) for t in debian_changelog_entries(args.changelog)]
    ordinary += [("commit-messages", t) for t in commit_messages(args.commits)]
    ordinary += [("scifact", t) for t in scifact_sentences(args.scifact, args.eval_dir)]
    kinds = len({k for k, _, _ in secrets})
    print(f"fake secrets: {len(secrets)} of {kinds} kinds; ordinary texts: {len(ordinary)}")

    detectors: list[tuple[str, Detector]] = []
    if args.detector in ("memstore", "both"):
        detectors.append(("memstore.redact", memstore_detector()))
    if args.detector in ("detect-secrets", "both"):
        try:
            detectors.append(("detect-secrets (default plugins)", detect_secrets_detector()))
        except ImportError:
            print("detect-secrets is not installed (pip install detect-secrets): skipped")
    for name, detector in detectors:
        evaluate(name, detector, secrets, ordinary, args.show)


if __name__ == "__main__":
    main()
