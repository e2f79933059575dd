import sqlite3

from cai import store
from cai.store.schema import migrations


def test_connect_creates_schema_with_wal(db_path):
    db = store.connect(db_path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    for table in ["constitutions", "constitution_versions", "principles", "exemplars", "prompt_sets", "prompts",
                  "pref_sets", "pairs", "models", "runs", "run_logs", "chains", "chain_steps", "users",
                  "battles", "votes"]:
        assert db[table].exists(), table
    assert [m.name for m in migrations.pending(db)] == []


def test_connect_is_idempotent_and_keeps_data(db_path):
    db = store.connect(db_path)
    db["prompt_sets"].insert({"name": "s", "kind": "red-team", "created_at": store.now()})
    db.close()
    again = store.connect(db_path)
    assert [r["name"] for r in again["prompt_sets"].rows] == ["s"]


def test_db_path_resolution(monkeypatch, tmp_path):
    monkeypatch.delenv("CAI_DB", raising=False)
    assert str(store.db_path()) == "data/workbench.db"
    monkeypatch.setenv("CAI_DB", str(tmp_path / "x.db"))
    assert store.db_path() == tmp_path / "x.db"
    assert str(store.db_path("given.db")) == "given.db"


def test_older_database_is_migrated_in_place(db_path):
    """A database made by the first release (first migration only) gets every later one, rows kept."""
    from sqlite_utils import Database

    all_names = [m.name for m in migrations.pending(Database(memory=True))]
    old = Database(db_path)
    if len(all_names) > 1:
        migrations.apply(old, stop_before=all_names[1])
    else:
        migrations.apply(old)
    old["prompt_sets"].insert({"name": "kept", "kind": "helpful", "created_at": "2026-01-01"})
    old.close()
    db = store.connect(db_path)
    assert migrations.pending(db) == []
    assert [m.name for m in migrations.applied(db)] == all_names
    assert [r["name"] for r in db["prompt_sets"].rows] == ["kept"]


def test_unique_vote_per_turn(db):
    import pytest

    db["battles"].insert({"id": 1, "dimension": "harmlessness", "status": "open"})
    db["votes"].insert({"battle_id": 1, "turn": 0, "user_id": 1, "winner": "model_a"})
    with pytest.raises(sqlite3.IntegrityError):
        db["votes"].insert({"battle_id": 1, "turn": 0, "user_id": 1, "winner": "model_b"})


def test_every_migration_function_is_registered_in_definition_order():
    """A migration function that lost its decorator (e.g. in a merge) would silently never run: sqlite-utils
    then creates its tables on first insert, without their columns' types, indexes and constraints."""
    import inspect

    from cai.store import schema

    defined = [name for name, fn in inspect.getmembers(schema, inspect.isfunction)
               if name.startswith("m0") and fn.__module__ == schema.__name__]
    registered = [m.name for m in schema.migrations._migrations]
    assert sorted(registered) == sorted(defined)
    assert len(set(registered)) == len(registered)


def test_a_transaction_that_reads_before_it_writes_is_not_refused_when_another_process_wrote_between(db_path):
    """`atomic()` takes the write lock when it begins: another connection cannot commit between this one's read
    and its write (with a deferred BEGIN it could, and SQLite then refused the write at once: "database is
    locked", what a pipeline's worker hit while its heartbeat thread wrote)."""
    mine, other = store.connect(db_path), store.connect(db_path)
    other.execute("PRAGMA busy_timeout = 50")
    with mine.atomic():
        assert mine.execute("select count(*) from run_logs").fetchone() == (0,)
        try:
            with other.atomic():
                other.table("run_logs").insert({"run_id": None, "ts": "t0", "level": "info", "line": "other"})
            other_wrote = True
        except sqlite3.OperationalError as exc:
            assert "locked" in str(exc)
            other_wrote = False
        mine.table("run_logs").insert({"run_id": None, "ts": "t1", "level": "info", "line": "mine"})
    assert other_wrote is False
    assert [r["line"] for r in other.table("run_logs").rows] == ["mine"]
    with mine.atomic(), mine.atomic():  # nested: a savepoint inside the immediate transaction
        mine.table("run_logs").insert({"run_id": None, "ts": "t2", "level": "info", "line": "nested"})
    assert mine.table("run_logs").count == 2
