"""Version chains: the rules every supersedes/superseded_by link must keep.

A memory's versions form a line: each ``supersedes`` points at an existing memory whose
``superseded_by`` points back, and following ``superseded_by`` from any version ends at one
current version (no link to nothing, no loop). A version stored as superseded by a memory
that does not link back (an import that found its text already live under another id) is
allowed: it still leads to one current version. So is a version that lost a concurrent
update (sync): it supersedes the same parent as the winner and is itself superseded by the
winner, so it is in history, not current. Import checks a file against these rules
before writing; ``verify`` checks the database. Backend-neutral: it sees ids only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

__all__ = ["Links", "chain_problems"]

#: id → (supersedes, superseded_by)
Links = Mapping[str, tuple[str | None, str | None]]


def chain_problems(
    links: Links,
    exists: Callable[[Iterable[str]], set[str]],
    *,
    check: Iterable[str] | None = None,
) -> list[str]:
    """One line per broken link among the ids in ``check`` (default: every id in ``links``).

    ``links`` holds every memory that has a link (or that the caller vouches for); a memory
    not in it has no links. ``exists(ids)`` returns those of ``ids`` that exist at all."""
    ids = list(links) if check is None else list(check)
    targets = {t for i in ids for t in links[i] if t is not None and t not in links}
    known = exists(targets) if targets else set()
    problems: list[str] = []
    for mid in ids:
        sup, by = links[mid]
        if by is not None and by not in links and by not in known:
            problems.append(f"memory {mid} is superseded by {by}, which does not exist")
        if sup is not None:
            if sup not in links and sup not in known:
                problems.append(f"memory {mid} supersedes {sup}, which does not exist")
            elif links.get(sup, (None, None))[1] != mid and by is None:
                problems.append(
                    f"memory {mid} supersedes {sup}, but {sup} is not superseded by it "
                    "(two current versions)"
                )
    ends: dict[str, bool] = {}  # id → following superseded_by from it ends at a current version
    for mid in ids:
        path: list[str] = []
        on_path: set[str] = set()
        node: str | None = mid
        ok = True
        while node is not None and node in links and node not in ends:
            if node in on_path:
                ok = False
                problems.append(f"memory {mid}: its versions loop ({' → '.join([*path, node])})")
                break
            path.append(node)
            on_path.add(node)
            node = links[node][1]
        if node is not None and node in ends:
            ok = ok and ends[node]
        for visited in path:
            ends[visited] = ok
    return list(dict.fromkeys(problems))
