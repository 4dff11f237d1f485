"""The merge is a join: commutative, associative, idempotent — checked directly on random
states — and what it derives is a valid store state (one current version per chain and per
text, no loops, no link pointing nowhere)."""

from __future__ import annotations

import random

import pytest

from memstore.sync.state import State, Version, merge, normalize
from memstore.sync.wire import RemoteStateError, check_links, decode_tree, encode_tree

TEXTS = ["alpha", "beta", "gamma", "delta", "alpha ", "beta"]


def _ts(n: int) -> str:
    return f"2026-01-01T00:00:{n // 1000:02d}.{n % 1000:06d}Z"


def universe(rng: random.Random, size: int) -> tuple[list[Version], dict[str, str | None]]:
    """Versions forming chains (with branches, as concurrent edits make) and the purge marks a
    purge of some of them would leave."""
    versions: list[Version] = []
    for n in range(size):
        parent = rng.choice(versions).id if versions and rng.random() < 0.5 else None
        versions.append(Version(
            id=f"V{n:04d}", text=rng.choice(TEXTS), namespace=rng.choice(["a", "b"]), tags=(),
            metadata="{}", source=None, project=None, branch=None, created_at=_ts(rng.randrange(50)),
            expires_at=None, supersedes=parent, updated_at=_ts(0), deleted=False, deleted_at=None,
        ))
    purged = {v.id: v.supersedes for v in versions if rng.random() < 0.15}
    return versions, purged


def replica(rng: random.Random, versions: list[Version], purged: dict[str, str | None]) -> State:
    """What one replica may hold: an ancestor-closed part of the versions (minus what it
    purged), each with its own forgotten state."""
    by_id = {v.id: v for v in versions}
    picked: set[str] = set()
    for v in versions:
        if rng.random() < 0.6:
            node: str | None = v.id
            while node is not None:
                picked.add(node)
                node = by_id[node].supersedes
    marks = {p: purged[p] for p in purged if rng.random() < 0.5}
    # a version's purged parent must be marked for it to stay linked
    for vid in list(picked):
        parent = by_id[vid].supersedes
        if parent in purged and parent not in marks and parent not in picked:
            marks[parent] = purged[parent]
    held = {}
    for vid in picked - set(marks):
        stamp = rng.randrange(1000)
        deleted = rng.random() < 0.3
        held[vid] = Version(**{**by_id[vid].__dict__, "updated_at": _ts(1000 + stamp), "deleted": deleted,
                               "deleted_at": _ts(1000 + stamp) if deleted else None})
    return State(held, marks)


def check_valid(state: State) -> None:
    versions = state.versions
    check_links(versions, state.purged)  # no dangling or looping link
    currents = [v for v in versions.values() if v.superseded_by is None]
    hashes = [v.content_hash for v in currents]
    assert len(hashes) == len(set(hashes)), "two current versions hold the same text"
    for v in versions.values():  # every chain leads to exactly one current version
        node, hops = v, 0
        while node.superseded_by is not None:
            node = versions[node.superseded_by]
            hops += 1
            assert hops <= len(versions)


@pytest.mark.parametrize("seed", range(40))
def test_merge_is_commutative_associative_idempotent(seed: int) -> None:
    rng = random.Random(seed)
    versions, purged = universe(rng, rng.randrange(3, 40))
    a, b, c = (replica(rng, versions, purged) for _ in range(3))
    ab = merge(a, b)
    assert ab.key() == merge(b, a).key()
    assert merge(ab, c).key() == merge(a, merge(b, c)).key() == merge(merge(a, c), b).key()
    assert merge(a, a).key() == normalize(a).key() == merge(normalize(a)).key()
    assert merge(ab, b).key() == ab.key()
    for state in (ab, merge(ab, c), merge(a)):
        check_valid(state)
    # everything not purged in any replica is there
    gone = set(a.purged) | set(b.purged) | set(c.purged)
    assert set(merge(a, b, c).versions) == (set(a.versions) | set(b.versions) | set(c.versions)) - gone


def _v(vid: str, text: str, created: int, *, parent: str | None = None, updated: int | None = None,
       deleted: bool = False) -> Version:
    stamp = _ts(updated if updated is not None else created)
    return Version(vid, text, "ns", (), "{}", None, None, None, _ts(created), None, parent, stamp,
                   deleted, stamp if deleted else None)


def test_concurrent_updates_pick_one_winner_and_keep_the_loser() -> None:
    root = _v("R", "we use sqlite", 1, updated=5)
    a = State({"R": root, "A": _v("A", "we use sqlite 3.45", 5, parent="R")}, {})
    b = State({"R": root, "B": _v("B", "we use sqlite with WAL", 6, parent="R")}, {})
    m = merge(a, b)
    assert m.versions["B"].superseded_by is None  # the later edit wins
    assert m.versions["A"].superseded_by == "B"  # the loser stays, superseded by the winner
    assert m.versions["R"].superseded_by == "B"
    assert m.key() == merge(b, a).key()


def test_same_text_on_two_machines_settles_on_one() -> None:
    a = State({"X": _v("X", "deploy on fridays", 3)}, {})
    b = State({"Y": _v("Y", "deploy  on fridays", 4)}, {})  # same normalised text
    m = merge(a, b)
    current = [v.id for v in m.versions.values() if v.superseded_by is None]
    assert current == ["Y"] and m.versions["X"].superseded_by == "Y"


def test_forget_and_restore_last_writer_wins() -> None:
    base = _v("X", "note", 1)
    forgot = State({"X": _v("X", "note", 1, updated=9, deleted=True)}, {})
    restored = State({"X": _v("X", "note", 1, updated=12)}, {})
    assert merge(State({"X": base}, {}), forgot).versions["X"].deleted
    assert not merge(forgot, restored).versions["X"].deleted
    assert not merge(restored, forgot).versions["X"].deleted


def test_purge_marks_win_and_chains_reconnect() -> None:
    old = State({"P": _v("P", "v1", 1), "M": _v("M", "v2", 2, parent="P"),
                 "C": _v("C", "v3", 3, parent="M")}, {})
    purged = State({"P": _v("P", "v1", 1), "C": _v("C", "v3", 3, parent="P")}, {"M": "P"})
    m = merge(old, purged)
    assert "M" not in m.versions and m.purged == {"M": "P"}
    assert m.versions["C"].supersedes == "P" and m.versions["P"].superseded_by == "C"


def test_wire_roundtrip_and_refusals() -> None:
    rng = random.Random(7)
    versions, purged = universe(rng, 20)
    state = merge(replica(rng, versions, purged))
    files = encode_tree(state)
    back, dropped = decode_tree(files, model="m", dimension=4)
    assert back.key() == state.key() and dropped == 0
    with pytest.raises(RemoteStateError):
        decode_tree({"README.md": b"hello"}, model="m", dimension=4)
    forged = dict(files)
    forged["memstore-sync.json"] = files["memstore-sync.json"].replace(b'"memories": ', b'"memories": 1')
    with pytest.raises(RemoteStateError, match="truncated or edited"):
        decode_tree(forged, model="m", dimension=4)
