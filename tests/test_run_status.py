"""One status source: `cai runs show ID --json`, `cai runs list`, the dashboard's runs list and its run page
give the same status and counts for a cancelled, a resumed, a cancelling and a finished run."""

from __future__ import annotations

import json
import os
from types import SimpleNamespace

import pytest

from cai import runs, store, users
from cai.backends.base import ScriptedBackend
from cai.cli import main
from cai.stages import SLConfig
from tests.helpers import seed
from ui import dashboard as D
from ui.common import AppContext

VIEWER = SimpleNamespace(username="val")


def cli_json(capsys, *argv: str):
    capsys.readouterr()
    assert main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def views(capsys, db_path, ctx, run_id: int) -> dict[str, object]:
    """(status, progress) as each view shows them."""
    shown = cli_json(capsys, "runs", "show", str(run_id), "--db", str(db_path))["shown"]
    listed = next(r for r in cli_json(capsys, "runs", "list", "--db", str(db_path)) if r["id"] == run_id)
    capsys.readouterr()
    assert main(["runs", "show", str(run_id), "--db", str(db_path)]) == 0
    cli_line = "  ".join(p for p in capsys.readouterr().out.splitlines()[0].split("  ") if not p.endswith("tok/s"))
    row = D.runs_frame(runs.list_runs(ctx.db())).set_index("id").loc[run_id]
    header, _, _ = D.run_detail(ctx, run_id, VIEWER)
    return {"cli": (shown["status"], shown["text"]), "cli list": (listed["shown"]["status"], listed["progress"]),
            "cli line": cli_line, "list": (row["status"], row["progress"]), "page": header}


def test_cancelled_resumed_cancelling_and_finished_runs_show_the_same_status_and_counts(db, db_path, capsys,
                                                                                       monkeypatch):
    users.add_user(db, "val", "viewer", "password1")
    seed(db, n_prompts=2)
    ctx = AppContext(db_path)
    state = {"calls": 0, "cancel_at": 3, "run": 0}

    class Cancelling(ScriptedBackend):
        def generate(self, prompts, params):
            state["calls"] += 1
            if state["calls"] == state["cancel_at"]:
                runs.request_cancel(db, state["run"])
            return super().generate(prompts, params)

    monkeypatch.setitem(runs.SCRIPTED, "tiny", Cancelling(respond=lambda p: " ok"))
    config = SLConfig(prompts="red", model="tiny", constitution="test", revisions=2, batch_size=1)

    # Cancelled after 3 of 10 steps: chain 1 has its response and round 1, chain 2 nothing.
    state["run"] = cancelled = runs.create_run(db, config)
    assert runs.execute(db, cancelled)["status"] == "cancelled"
    v = views(capsys, db_path, ctx, cancelled)
    assert v["cli"] == v["cli list"] == ("cancelled", "0/2 done")
    assert v["cli line"] == f"run {cancelled} sl cancelled: 0/2"
    assert v["list"] == ("cancelled", "▱▱▱▱▱▱▱▱▱▱▱▱ 0/2 (0%)")
    assert "<span id='run-status'>cancelled</span>" in v["page"]
    assert "<p id='run-progress'>0/2 done · " in v["page"]

    # Resumed (queued for its worker): the stopped execution's step counters are not shown as this one's.
    resumed = runs.create_run(db, config)
    state.update(calls=0, run=resumed)
    runs.execute(db, resumed)
    runs.prepare_resume(db, resumed)
    v = views(capsys, db_path, ctx, resumed)
    assert v["cli"] == v["cli list"] == ("queued", "0/2 done")
    assert v["cli line"] == f"run {resumed} sl queued: 0/2"
    assert v["list"] == ("queued", "▱▱▱▱▱▱▱▱▱▱▱▱ 0/2 (0%)")
    assert "<span id='run-status'>queued</span>" in v["page"] and "<p id='run-progress'>0/2 done · " in v["page"]

    # Cancelling: its worker is alive and still on a step.
    db["runs"].update(resumed, {"status": "running", "pid": os.getpid(), "heartbeat_at": store.now(),
                                "steps_done": 4, "steps_total": 10, "cancel_requested": 1})
    v = views(capsys, db_path, ctx, resumed)
    assert v["cli"] == v["cli list"] == ("cancelling…", "0/2 done · step 4/10")
    assert v["cli line"] == f"run {resumed} sl cancelling…: 0/2  step 4/10"
    assert v["list"] == ("cancelling…", "▰▰▰▰▰▱▱▱▱▱▱▱ 4/10 (40%) steps · 0/2 done")
    assert "<span id='run-status'>cancelling…</span>" in v["page"]
    assert "<p id='run-progress'>0/2 done · step 4/10 · " in v["page"]

    # Finished: the resumed run, run to the end.
    db["runs"].update(resumed, {"status": "cancelled", "pid": None, "cancel_requested": 0})
    runs.prepare_resume(db, resumed)
    state["cancel_at"] = 0
    assert runs.execute(db, resumed)["status"] == "done"
    v = views(capsys, db_path, ctx, resumed)
    assert v["cli"] == v["cli list"] == ("done", "2/2 done")
    assert v["cli line"] == f"run {resumed} sl done: 2/2"
    assert v["list"] == ("done", "▰▰▰▰▰▰▰▰▰▰▰▰ 2/2 (100%)")
    assert "<span id='run-status'>done</span>" in v["page"] and "<p id='run-progress'>2/2 done · " in v["page"]


@pytest.mark.parametrize("statuses,expected", [(["done", "running"], "1/2"), (["done", "done"], "2/2")])
def test_an_experiment_counts_the_stage_runs_it_lists(db, statuses, expected, monkeypatch):
    from cai import experiments

    monkeypatch.setattr(experiments, "deltas", lambda db, exp_id: {})  # no arms ran: only the counts matter

    seed(db, n_prompts=1)
    parent = runs.create_run(db, SLConfig(prompts="red", model="tiny", constitution="test"))
    exp_id = int(db["experiments"].insert({"run_id": parent, "config": store.dumps({"versions": "test@1"}),
                                           "created_at": store.now()}).last_pk)
    for i, status in enumerate(statuses):
        child = runs.create_run(db, SLConfig(prompts="red", model="tiny", constitution="test"))
        db["runs"].update(child, {"status": status, "pid": os.getpid(), "heartbeat_at": store.now()})
        db["experiment_runs"].insert({"experiment_id": exp_id, "arm": i, "version": "test@1",
                                      "constitution_version_id": 1, "stage": f"s{i}", "run_id": child,
                                      "position": i})
    shown = experiments.show(db, exp_id)
    assert f"{shown['done']}/{shown['total']}" == expected
    assert len(shown["runs"]) == len(statuses)
