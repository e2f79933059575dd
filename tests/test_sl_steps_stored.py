"""SL steps are stored as they finish: a cancel mid-chain keeps the finished responses, critiques and revisions,
and the resumed run continues from them (no step made twice)."""

from __future__ import annotations

from cai import runs, sl
from cai.backends.base import ScriptedBackend
from cai.stages import SLConfig
from tests.helpers import seed


def test_cancel_mid_chain_keeps_finished_steps_and_resume_does_not_redo_them(db, monkeypatch):
    seed(db, n_prompts=2)
    state = {"calls": 0, "run": 0}

    class Counting(ScriptedBackend):
        def generate(self, prompts, params):
            state["calls"] += 1
            if state["calls"] == 3:  # round 1's revisions: the cancel comes while they are made
                runs.request_cancel(db, state["run"])
            return super().generate(prompts, params)

    n = iter(range(1000))
    monkeypatch.setitem(runs.SCRIPTED, "tiny", Counting(respond=lambda p: f" answer {next(n)}"))
    config = SLConfig(prompts="red", model="tiny", constitution="test", revisions=2, batch_size=2)
    state["run"] = run_id = runs.create_run(db, config)
    run = runs.execute(db, run_id)
    # 3 of the 5 calls (initial, critique 1, revision 1) finished: 6 steps of 10 stored, no chain whole yet.
    assert (run["status"], run["done"], run["steps_done"], run["steps_total"]) == ("cancelled", 0, 6, 10)
    assert db["chains"].count_where("run_id = ?", [run_id]) == 0
    kept = sl.partial_steps(db, run_id)
    assert {k: [(s.kind, s.round, s.output) for s in v] for k, v in kept.items()} == {
        (1, 0): [("initial", 0, " answer 0"), ("critique", 1, " answer 2"), ("revision", 1, " answer 4")],
        (2, 0): [("initial", 0, " answer 1"), ("critique", 1, " answer 3"), ("revision", 1, " answer 5")],
    }

    runs.prepare_resume(db, run_id)
    run = runs.execute(db, run_id)
    assert (run["status"], run["done"], run["steps_done"], run["steps_total"]) == ("done", 2, 10, 10)
    assert state["calls"] == 5  # only critique 2 and revision 2 were made after the resume
    for (prompt_id, _), steps in kept.items():
        chain_id = db.execute("select id from chains where run_id = ? and prompt_id = ?", [run_id, prompt_id]).fetchone()[0]
        chain = sl.get_chain(db, chain_id)
        assert [(s["kind"], s["round"], s["output"], s["sent"]) for s in chain["steps"][:3]] == \
            [(s.kind, s.round, s.output, s.sent) for s in steps]
        assert [(s["kind"], s["round"]) for s in chain["steps"][3:]] == [("critique", 2), ("revision", 2)]
        assert chain["final"] == chain["steps"][-1]["output"].strip()
    assert db["sl_partial_steps"].count == 0
    assert any("6 steps of 2 unfinished chains stored" in g["line"] for g in runs.logs(db, run_id))
