"""The backend contract (memstore/storage/base.py), exercised on every backend.

Each test talks to a backend only through the protocol, so a new backend gets the whole
suite by adding a parameter to the ``backend`` fixture (``conftest.py`` beside this file).
"""

from __future__ import annotations

import json
from datetime import timedelta

import numpy as np
import pytest

from memstore.errors import ModelMismatchError, ModelMismatchWarning, StoreError
from memstore.identity import content_hash, new_id
from memstore.storage.base import Backend, Filter, NewMemory
from memstore.timeutil import format_ts, now

MODEL = "test-model:4"
DIM = 4


def row(text: str, *, namespace: str = "default", tags: tuple[str, ...] = (), project: str | None = None,
        expires_in: timedelta | None = None, **extra) -> NewMemory:
    stamp = format_ts(now())
    return NewMemory(
        id=new_id(), text=text, namespace=namespace, tags=tags, metadata=extra.pop("metadata", {}),
        content_hash=content_hash(text, namespace, project), created_at=extra.pop("created_at", stamp),
        updated_at=stamp, project=project, expires_at=format_ts(now() + expires_in) if expires_in else None,
        **extra,
    )


def vec(*values: float) -> np.ndarray:
    v = np.asarray(values, dtype=np.float32)
    return v / np.linalg.norm(v)


def as_vector(*values: float) -> tuple[str, bytes]:
    return MODEL, vec(*values).astype("<f4").tobytes()


def live(flt: Filter | None = None) -> Filter:
    return flt or Filter(now=now())


def test_is_a_backend(backend: Backend):
    assert isinstance(backend, Backend)
    assert backend.store_id and isinstance(backend.location, str)


def test_insert_get_and_find_by_hash(backend: Backend):
    r = row("we chose postgres", tags=("db",), metadata={"ticket": "OPS-1"})
    m = backend.insert(r, as_vector(1, 0, 0, 0))
    assert (m.id, m.text, m.tags, m.metadata) == (r.id, r.text, ("db",), {"ticket": "OPS-1"})
    assert backend.get(r.id) == m and backend.get("missing") is None
    assert backend.get_many([r.id, "missing"]) == {r.id: m}
    assert backend.find_live(r.content_hash) == m
    assert backend.find_live(r.content_hash, except_id=r.id) is None
    assert backend.vectors_of([r.id])[r.id][:2] == (MODEL, r.content_hash)


def test_a_live_duplicate_is_resolved_or_refused_as_the_backend_says(backend: Backend):
    first = backend.insert(row("the same words"))
    if backend.resolves_duplicates:  # writers then skip their own second lookup (capture.py)
        assert backend.insert(row("the same words")).id == first.id
    else:
        with pytest.raises(StoreError, match="UNIQUE"):
            backend.insert(row("the same words"))
    assert backend.counts()["memories"] == 1


def test_write_is_atomic(backend: Backend):
    r = row("never half stored")
    with pytest.raises(RuntimeError), backend.write():
        backend.insert(r)
        raise RuntimeError("crash inside the transaction")
    assert backend.get(r.id) is None


def test_list_filters_and_order(backend: Backend):
    a = backend.insert(row("alpha", namespace="n1", tags=("x", "y"), project="p"))
    b = backend.insert(row("beta", namespace="n2", tags=("x",), metadata={"k": "v"}, source="git"))
    c = backend.insert(row("gamma", namespace="n1", expires_in=timedelta(seconds=-1)))
    assert [m.id for m in backend.list(live(), 10)] == [b.id, a.id]  # newest first, expired out
    assert [m.id for m in backend.list(Filter(namespaces=("n1",), now=now()), 10)] == [a.id]
    assert [m.id for m in backend.list(Filter(tags=("x", "y"), now=now()), 10)] == [a.id]
    assert [m.id for m in backend.list(Filter(projects=("p",), now=now()), 10)] == [a.id]
    assert [m.id for m in backend.list(Filter(projects=(None,), now=now()), 10)] == [b.id]
    assert [m.id for m in backend.list(Filter(source="git", now=now()), 10)] == [b.id]
    assert [m.id for m in backend.list(Filter(metadata=(("k", "v"),), now=now()), 10)] == [b.id]
    expired = Filter(include_expired=True, only_expired=True, now=now())
    assert [m.id for m in backend.list(expired, 10)] == [c.id]
    assert [m.id for m in backend.list(live(), 1, offset=1)] == [a.id]


def test_supersede_links_both_ways_and_chain(backend: Backend):
    old = backend.insert(row("v1"))
    new_row = row("v2")
    new_row = NewMemory(**{**new_row.__dict__, "supersedes": old.id})
    new = backend.supersede(old.id, new_row, as_vector(0, 1, 0, 0))
    assert new.supersedes == old.id and backend.get(old.id).superseded_by == new.id
    assert [m.id for m in backend.chain(old.id)] == [old.id, new.id] == [m.id for m in backend.chain(new.id)]
    assert [m.id for m in backend.list(live(), 10)] == [new.id]


def test_forget_restore_and_purge(backend: Backend):
    m = backend.insert(row("secret plan"), as_vector(1, 1, 0, 0))
    keep = backend.insert(row("keep me"))
    assert backend.set_forgotten(m.id, True, format_ts(now())) is True
    assert backend.set_forgotten(m.id, True, format_ts(now())) is False
    assert backend.get(m.id).deleted and [x.id for x in backend.list(live(), 10)] == [keep.id]
    assert backend.set_forgotten(m.id, False, format_ts(now())) is True
    assert not backend.get(m.id).deleted
    backend.set_forgotten(m.id, True, format_ts(now()))
    assert [(x.id, why) for x, why in backend.purge_plan(now())] == [(m.id, "forgotten")]
    assert [(x.id, why) for x, why in backend.purge(now())] == [(m.id, "forgotten")]
    assert backend.get(m.id) is None and backend.vectors_of([m.id]) == {}
    assert backend.purge_plan(now()) == [] and backend.get(keep.id) is not None


def test_apply_state_takes_only_newer_states(backend: Backend):
    m = backend.insert(row("state"))
    values = {"deleted": 1, "deleted_at": format_ts(now()), "superseded_by": None,
              "updated_at": format_ts(now() + timedelta(seconds=5))}
    assert backend.apply_state(m.id, values) == "updated"
    assert backend.get(m.id).deleted
    older = {**values, "deleted": 0, "deleted_at": None, "updated_at": format_ts(now() - timedelta(days=1))}
    assert backend.apply_state(m.id, older) == "unchanged"


def test_insert_exported_keeps_ids_and_links(backend: Backend):
    r = row("exported")
    values = {**r.__dict__, "tags": json.dumps([]), "metadata": json.dumps({}), "deleted": 0}
    backend.insert_exported(values, as_vector(0, 0, 1, 0))
    assert backend.get(r.id).text == "exported"
    assert [k for k in backend.export_keys(None, with_history=True)]
    exported = list(backend.export_rows(backend.export_keys(None, with_history=True), with_vectors=True))
    assert [(m.id, v[0]) for m, v in exported] == [(r.id, MODEL)]


def test_vectors_pending_and_models(backend: Backend):
    a = backend.insert(row("needs a vector"))
    b = backend.insert(row("has one"), as_vector(1, 0, 0, 0))
    keys = backend.needing_vectors(MODEL)
    jobs = backend.embed_jobs(keys)
    assert [j.text for j in jobs] == ["needs a vector"]
    backend.put_vectors(MODEL, [(jobs[0].key, jobs[0].content_hash, vec(0, 1, 0, 0).astype("<f4").tobytes())])
    assert backend.needing_vectors(MODEL) == [] and backend.models() == {MODEL: 2}
    assert len(backend.needing_vectors(MODEL, force=True)) == 2
    assert backend.needing_vectors("other-model") and backend.pending_count() == 0
    assert set(backend.vectors_of([a.id, b.id])) == {a.id, b.id}


def test_filters_hold_on_both_legs(backend: Backend):
    """Invariant 3: a selective filter constrains the keyword and the vector list alike."""
    backend.insert(row("deploy the canary release", namespace="ops"), as_vector(1, 0, 0, 0))
    target = backend.insert(row("deploy notes for the canary", namespace="docs"), as_vector(0.9, 0.1, 0, 0))
    for i in range(30):
        backend.insert(row(f"deploy canary variant {i}", namespace="ops"), as_vector(1, 0.01 * i, 0, 0))
    flt = Filter(namespaces=("docs",), now=now())
    leg = backend.keyword_leg("deploy canary")
    assert [backend.memories_for([m.key])[m.key].id for m in leg.search(flt, 5)] == [target.id]
    found = backend.vector_search(vec(1, 0, 0, 0), flt, 5, model=MODEL)
    assert [backend.memories_for([k])[k].id for k, _ in found] == [target.id]


def test_keyword_leg_evidence_and_similarities(backend: Backend):
    a = backend.insert(row("alpha release notes"), as_vector(1, 0, 0, 0))
    b = backend.insert(row("beta rollout"), as_vector(0, 1, 0, 0))
    leg = backend.keyword_leg("release")
    found = leg.search(live(), 5)
    assert len(found) == 1 and 0 < found[0].strength <= 1 and found[0].bm25 is not None
    assert backend.memories_for([found[0].key])[found[0].key].id == a.id
    ranked = backend.vector_search(vec(0, 1, 0, 0), live(), 5, model=MODEL)
    keys = {backend.memories_for([k])[k].id: k for k, _ in ranked}
    assert ranked[0][1] == pytest.approx(1.0, abs=1e-5) and keys.keys() == {a.id, b.id}
    assert leg.evidence_for([keys[b.id]]) == {}
    sims = backend.similarities(vec(1, 0, 0, 0), [keys[a.id]], model=MODEL)
    assert sims[keys[a.id]] == pytest.approx(1.0, abs=1e-5)


def test_vector_search_never_mixes_models(backend: Backend):
    backend.insert(row("old model vector"), ("other-model:4", vec(1, 0, 0, 0).astype("<f4").tobytes()))
    with pytest.warns(ModelMismatchWarning):
        assert backend.vector_search(vec(1, 0, 0, 0), live(), 5, model=MODEL) == []
    with pytest.raises(ModelMismatchError):
        backend.vector_search(vec(1, 0, 0, 0), live(), 5, model=MODEL, required=True)


def test_nearest_finds_near_duplicates_in_scope(backend: Backend):
    a = backend.insert(row("the build runs nightly", namespace="ops"), as_vector(1, 0, 0, 0))
    backend.insert(row("the build runs weekly", namespace="other"), as_vector(1, 0, 0, 0))
    found = backend.nearest(vec(1, 0.01, 0, 0), Filter(namespaces=("ops",), projects=(None,), now=now()), 5,
                            model=MODEL)
    assert [(m.id, round(s, 3)) for m, s in found] == [(a.id, 1.0)]


def test_counts_describe_verify_and_rebuild(backend: Backend):
    backend.insert(row("counted"), as_vector(1, 0, 0, 0))
    forgotten = backend.insert(row("forgotten"))
    backend.set_forgotten(forgotten.id, True, format_ts(now()))
    counts = backend.counts()
    assert (counts["memories"], counts["forgotten"], counts["namespaces"]) == (1, 1, {"default": 1})
    assert isinstance(backend.describe(MODEL, DIM), dict)
    assert backend.rebuild_index(MODEL, DIM) == 1
    report = backend.verify(model=MODEL, dimension=DIM, quick=False, repair=False,
                            embed=lambda texts: np.zeros((len(texts), DIM), dtype=np.float32))
    assert report.ok, report.to_dict()


def test_closed_backend_refuses_work(backend: Backend):
    backend.close()
    backend.close()  # idempotent
    with pytest.raises(StoreError):
        backend.get("anything")


def _sync_row(r: NewMemory, **changes) -> dict:
    values = {"id": r.id, "text": r.text, "namespace": r.namespace, "tags": json.dumps(list(r.tags)),
              "source": None, "metadata": json.dumps(r.metadata), "project": r.project, "branch": None,
              "created_at": r.created_at, "updated_at": r.updated_at, "expires_at": None, "deleted": 0,
              "deleted_at": None, "supersedes": None, "superseded_by": None, "_vector": None}
    values.update(changes)
    values["content_hash"] = content_hash(values["text"], values["namespace"], values["project"])
    return values


def test_sync_rows_and_apply_sync(backend: Backend):
    from memstore.errors import StoreChangedError
    from memstore.storage.base import SYNC_COLUMNS

    kept, doomed = row("kept memory"), row("purged elsewhere")
    backend.insert(kept, as_vector(1, 0, 0, 0))
    backend.insert(doomed)
    rows, mark = backend.sync_rows()
    by_id = {r[0]: r for r in rows}
    assert set(by_id) == {kept.id, doomed.id} and len(rows[0]) == len(SYNC_COLUMNS) + 2
    assert by_id[kept.id][-2:] == as_vector(1, 0, 0, 0) and by_id[doomed.id][-2:] == (None, None)
    arriving = row("arrived from another machine")
    stamp = format_ts(now())
    changes = [_sync_row(arriving, _vector=as_vector(0, 1, 0, 0)),
               _sync_row(kept, deleted=1, deleted_at=stamp, updated_at=stamp)]
    backend.insert(row("written meanwhile"))
    with pytest.raises(StoreChangedError):  # the store moved since the snapshot: nothing changes
        backend.apply_sync(changes, [doomed.id], expect=mark)
    assert backend.get(doomed.id) is not None and backend.get(arriving.id) is None
    rows, mark = backend.sync_rows()
    kept_ids, after = backend.apply_sync(changes, [doomed.id], expect=mark)
    assert kept_ids == [] and after[-1] >= mark[-1]
    assert backend.get(doomed.id) is None and backend.get(kept.id).deleted
    assert backend.get(arriving.id).text == "arrived from another machine"
    assert backend.vectors_of([arriving.id])[arriving.id][2] == as_vector(0, 1, 0, 0)[1]
    # the same text live here under another id (outside the synced rows): kept superseded by it
    local = row("same text on both")
    backend.insert(local)
    twin = row("same text on both")
    rows, mark = backend.sync_rows()
    assert backend.apply_sync([_sync_row(twin)], [], expect=mark)[0] == [twin.id]
    assert backend.get(twin.id).superseded_by == local.id
