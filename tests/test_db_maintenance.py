"""`cai db backup` and `cai db check`: consistent copies of a database that is being written to."""

from __future__ import annotations

import argparse
import json
import sqlite3
import time

import pytest

from cai import runs, store
from cai.cli import main, make_parser
from cai.data import create_prompt_set
from cai.stages import SLConfig
from cai.store import maintenance
from tests.helpers import seed


def test_backup_copies_every_row_into_one_self_contained_file(db, tmp_path):
    create_prompt_set(db, "red", "red-team", ["\n\nHuman: a?\n\nAssistant:", "\n\nHuman: b?\n\nAssistant:"])
    result = maintenance.backup(db, tmp_path / "copy.db")
    assert result.path == str(tmp_path / "copy.db")
    assert (result.tables["prompt_sets"], result.tables["prompts"]) == (1, 2)
    assert "chains_fts" not in result.tables and "sqlite_sequence" not in result.tables
    # The copy is a plain single file (no -wal beside it) and opens as a workbench database.
    assert not (tmp_path / "copy.db-wal").exists()
    assert sqlite3.connect(tmp_path / "copy.db").execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    copy = store.connect(tmp_path / "copy.db")
    assert [r["text"] for r in copy["prompts"].rows_where(order_by="id")] == [
        "\n\nHuman: a?\n\nAssistant:", "\n\nHuman: b?\n\nAssistant:"]
    assert [p.name for p in tmp_path.iterdir() if "partial" in p.name] == []


def test_backup_refuses_what_would_lose_data(db, db_path, tmp_path):
    (tmp_path / "taken.db").write_text("keep me")
    with pytest.raises(ValueError, match=r"taken\.db: exists already \(pass --overwrite to replace it\)"):
        maintenance.backup(db, tmp_path / "taken.db")
    assert (tmp_path / "taken.db").read_text() == "keep me"
    with pytest.raises(ValueError, match="is a folder; name the backup file"):
        maintenance.backup(db, tmp_path)
    with pytest.raises(FileNotFoundError, match="no such folder"):
        maintenance.backup(db, tmp_path / "nowhere" / "x.db")
    with pytest.raises(ValueError, match="is the database itself"):
        maintenance.backup(db, db_path, overwrite=True)
    assert maintenance.backup(db, tmp_path / "taken.db", overwrite=True).tables["users"] == 0


def test_check_reports_a_dangling_foreign_key(db):
    assert maintenance.check(db) == maintenance.CheckResult(ok=True, integrity=["ok"], foreign_keys=[])
    db.execute("PRAGMA foreign_keys = OFF")
    db.execute("insert into prompts (id, set_id, position, text) values (7, 99, 0, 'orphan')")
    db.conn.commit()
    assert maintenance.check(db) == maintenance.CheckResult(
        ok=False, integrity=["ok"], foreign_keys=[{"table": "prompts", "rowid": 7, "parent": "prompt_sets", "fk_index": 0}]
    )


def test_cli_backup_and_check(db, db_path, tmp_path, capsys):
    create_prompt_set(db, "red", "red-team", ["\n\nHuman: a?\n\nAssistant:"])
    assert main(["db", "backup", str(tmp_path / "b.db"), "--db", str(db_path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["path"], out["tables"]["prompts"]) == (str(tmp_path / "b.db"), 1)
    assert main(["db", "backup", str(tmp_path / "b.db"), "--db", str(db_path)]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'b.db'}: exists already (pass --overwrite to replace it)\n"
    assert main(["db", "check", "--db", str(tmp_path / "b.db")]) == 0
    assert capsys.readouterr().out == (
        "ok: integrity check and foreign-key check found nothing\n"
        f"disk: 0 run folders 0.0 MB ({tmp_path / 'b.runs'}); 0 trained models 0.0 MB ({tmp_path / 'b.models'})\n")

    db.execute("PRAGMA foreign_keys = OFF")
    db.execute("insert into prompts (id, set_id, position, text) values (9, 42, 0, 'orphan')")
    db.conn.commit()
    assert main(["db", "check", "--db", str(db_path)]) == 1
    assert capsys.readouterr().out.splitlines()[0] == "foreign key: prompts row 9 points at a missing prompt_sets row"


def test_every_db_command_and_option_has_help():
    sub = next(a for a in make_parser()._actions if isinstance(a, argparse._SubParsersAction))
    actions = next(a for a in sub.choices["db"]._actions if isinstance(a, argparse._SubParsersAction))
    assert sorted(actions.choices) == ["backup", "check"]
    for name, parser in actions.choices.items():
        assert any(c.dest == name and c.help for c in actions._choices_actions), name
        for action in parser._actions:
            if not isinstance(action, argparse._HelpAction):
                assert action.help, f"db {name}: {action.dest} has no help"


@pytest.mark.timeout(240)
def test_backups_taken_while_a_real_worker_writes_are_consistent(db, db_path, tmp_path):
    """Back up again and again while an SL worker stores chains: every copy passes the checks, and
    every chain in it has all its steps (a chain and its steps are one transaction)."""
    seed(db, n_prompts=16)
    config = SLConfig(prompts="red", model="tiny", constitution="test", revisions=1, batch_size=2,
                      max_new_tokens=8, few_shot=1)
    run_id, proc = runs.start(db, db_path, config)
    copies, deadline = [], time.monotonic() + 200
    while proc.poll() is None and time.monotonic() < deadline:
        path = tmp_path / f"copy-{len(copies)}.db"
        maintenance.backup(store.connect(db_path), path)
        copies.append(path)
        time.sleep(0.2)
    assert proc.wait(timeout=30) == 0, runs.worker_log(db_path, run_id).read_text()
    assert runs.get_run(db, run_id)["status"] == "done"
    copies.append(tmp_path / "final.db")
    maintenance.backup(db, copies[-1])
    seen = []
    for path in copies:
        copy = store.connect(path)
        assert maintenance.check(copy).ok, path
        steps = copy.execute(
            "select c.id, count(s.id) from chains c left join chain_steps s on s.chain_id = c.id group by c.id"
        ).fetchall()
        # revisions=1: the initial response, one critique, one revision.
        assert all(n == 3 for _, n in steps), (path, steps)
        seen.append(len(steps))
        copy.close()
    assert seen == sorted(seen) and seen[-1] == 16
    assert len(copies) >= 3, "the run finished before a backup could be taken while it wrote"


@pytest.mark.parametrize("argv", [["db", "check"], ["db", "backup", "{tmp}/copy.db"], ["runs", "list"],
                                  ["users", "unlock", "admin"], ["arena", "export", "{tmp}/x.csv"]])
def test_checking_backing_up_and_reading_never_create_a_database(tmp_path, capsys, argv):
    """#25.6: `cai db check --db nothere/x.db` made the folder and an empty database and printed "ok"."""
    missing = tmp_path / "nothere" / "x.db"
    assert main([*(a.format(tmp=tmp_path) for a in argv), "--db", str(missing)]) == 2
    assert capsys.readouterr().err == f"error: {missing}: no such workbench database (`cai init --db {missing}` creates one)\n"
    assert not missing.parent.exists() and not (tmp_path / "copy.db").exists()
