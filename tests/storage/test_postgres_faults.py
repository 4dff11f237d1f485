"""Bad URLs, a server that is down, missing privileges and extensions: one-line errors that
name what to do, never a password, and nothing half-created."""

from __future__ import annotations

import pytest

from memstore.errors import StoreError
from memstore.storage.postgres import open_backend, redact_url
from memstore.storage.urls import is_postgres_url, redact_text

SECRET = "hunter2-s3cret"


@pytest.mark.parametrize(
    "url, expected",
    [
        (f"postgresql://alice:{SECRET}@db.internal:5432/memories", "postgresql://alice:***@db.internal:5432/memories"),
        ("postgresql://alice@db.internal/memories", "postgresql://alice@db.internal/memories"),
        (f"postgres://db/m?sslmode=require&password={SECRET}", "postgres://db/m?sslmode=require&password=***"),
        (f"host=db user=alice password={SECRET} dbname=m", "host=db user=alice password=*** dbname=m"),
        (f"postgresql://alice:{SECRET}@/m?host=/tmp/sock", "postgresql://alice:***@/m?host=/tmp/sock"),
    ],
)
def test_redact_url_hides_every_password(url, expected):
    assert redact_url(url) == expected
    if SECRET in url:  # a driver message repeating the password is redacted too
        assert SECRET not in redact_text(f"could not connect using {url}: password {SECRET} rejected", url)


def test_postgres_urls_are_recognised():
    assert is_postgres_url("postgresql://x/y") and is_postgres_url("postgres://x")
    assert not is_postgres_url("/home/me/store") and not is_postgres_url("postgresql:x")


def test_server_down_is_one_line_without_password(tmp_path):
    url = f"postgresql://alice:{SECRET}@/memories?host={tmp_path}&connect_timeout=2"
    with pytest.raises(StoreError) as info:
        open_backend(url)
    message = str(info.value)
    assert "cannot connect to PostgreSQL" in message and "\n" not in message
    assert SECRET not in message and "alice:***@" in message


def test_malformed_url_is_one_line(tmp_path):
    with pytest.raises(StoreError) as info:
        open_backend(f"postgresql://alice:{SECRET}@/memories?host={tmp_path}&nonsense_option=1")
    assert SECRET not in str(info.value) and "\n" not in str(info.value)


def _role(postgres_url: str, name: str, *, owner_sql: str = "") -> str:
    import psycopg
    from pg import with_database

    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {name} LOGIN PASSWORD '{SECRET}'")
        conn.execute(f"GRANT CONNECT ON DATABASE {conn.info.dbname} TO {name}")
        if owner_sql:
            conn.execute(owner_sql.format(role=name))
        dbname = conn.info.dbname
    parts = postgres_url.split("://", 1)[1]
    rest = parts.split("@", 1)[1] if "@" in parts else parts
    return with_database(f"postgresql://{name}:{SECRET}@{rest}", dbname)


def _tables(postgres_url: str) -> list[str]:
    import psycopg

    with psycopg.connect(postgres_url) as conn:
        return [r[0] for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")]


def test_role_without_create_privilege_gets_a_clear_error_and_nothing_is_created(postgres_url):
    url = _role(postgres_url, "reader_no_ddl", owner_sql="REVOKE CREATE ON SCHEMA public FROM PUBLIC")
    with pytest.raises(StoreError) as info:
        open_backend(url)
    message = str(info.value)
    assert SECRET not in message and "\n" not in message
    assert "extension" in message or "privilege" in message or "grant" in message
    assert _tables(postgres_url) == []


def test_role_that_may_not_create_the_extension_is_told_who_can(postgres_url):
    url = _role(postgres_url, "app_role", owner_sql="GRANT CREATE ON SCHEMA public TO {role}")
    with pytest.raises(StoreError, match="CREATE EXTENSION vector"):
        open_backend(url)
    assert _tables(postgres_url) == []


def test_least_privilege_role_uses_a_store_created_by_the_owner(postgres_url):
    """docs/team-store.md: the owner migrates; everyday users need only data privileges."""
    import psycopg

    owner = open_backend(postgres_url)
    owner.close()
    url = _role(postgres_url, "team_user")
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("GRANT USAGE ON SCHEMA public TO team_user")
        conn.execute("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO team_user")
        conn.execute("GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO team_user")
    user = open_backend(url, author="team_user")
    from memstore.identity import content_hash, new_id
    from memstore.storage.base import Filter, NewMemory
    from memstore.timeutil import format_ts, now

    stamp = format_ts(now())
    stored = user.insert(NewMemory(id=new_id(), text="granted", namespace="default", tags=(), metadata={},
                                   content_hash=content_hash("granted", "default"), created_at=stamp,
                                   updated_at=stamp), ("m", b"\x00\x00\x80\x3f" * 384))
    assert stored.author == "team_user"
    assert [m.key for m in user.keyword_leg("granted").search(Filter(now=now()), 5)]
    assert user.purge(now()) == []  # nothing to purge; VACUUM is only tried when rows went
    user.close()


def test_upgrade_to_the_change_counter_keeps_granted_writers_working(postgres_url, monkeypatch):
    """Schema step 2 (sync's change counter) on a store in use: roles granted data privileges
    before it can still write (the trigger runs as the owner); their writes move the mark."""
    import psycopg

    from memstore.identity import content_hash, new_id
    from memstore.storage.base import NewMemory
    from memstore.storage.postgres import schema
    from memstore.timeutil import format_ts, now

    def memory(text: str) -> NewMemory:
        stamp = format_ts(now())
        return NewMemory(id=new_id(), text=text, namespace="default", tags=(), metadata={},
                         content_hash=content_hash(text, "default"), created_at=stamp, updated_at=stamp)

    with monkeypatch.context() as m:
        m.setattr(schema, "MIGRATIONS", schema.MIGRATIONS[:1])
        m.setattr(schema, "SCHEMA_VERSION", 1)
        old = open_backend(postgres_url)
        old.insert(memory("stored before the upgrade"))
        old.close()
    url = _role(postgres_url, "early_user")
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("GRANT USAGE ON SCHEMA public TO early_user")
        conn.execute("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO early_user")
        conn.execute("GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO early_user")
    owner = open_backend(postgres_url)  # migrates to step 2
    rows, before = owner.sync_rows()
    assert [r[1] for r in rows] == ["stored before the upgrade"]
    user = open_backend(url)
    user.insert(memory("stored by a role granted before step 2"))
    user.close()
    assert owner.sync_rows()[1][-1] == before[-1] + 1
    owner.close()
